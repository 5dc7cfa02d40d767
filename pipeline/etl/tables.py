"""A user's table of data: a CSV file with a header, one label column, every other column a number.

Standard library only (and the invocation's memo): `CreateShards` reads and
checks the table when it is constructed, on Luigi's scheduling path, so that a
bad table stops the run before any work with one message naming the file, the
line and the column. The file is read once per invocation (`invocation.cached`),
its bytes once: the table and their sha256 (which the manifest records).
The problem follows the labels: numbers mean regression, anything else
classification (class names sorted); `problem="classification"` makes
integer labels classes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import invocation


@dataclass(frozen=True)
class Table:
    """A checked table: features by row, labels, and the problem they pose."""

    path: Path
    feature_names: tuple[str, ...]
    features: tuple[tuple[float, ...], ...]  # one tuple of floats per row, in file order
    labels: tuple[float, ...] | tuple[str, ...]  # numbers (regression) or class names (classification)
    problem: str  # "regression" or "classification"
    class_names: tuple[str, ...]  # sorted; () for regression
    lines: tuple[int, ...]  # the file's line number of each row (the header is line 1)
    sha256: str  # of the file's bytes, as read


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_table(path: Path, label_column: str, problem: str = "auto") -> Table:
    """Read and check a CSV table; raise ValueError naming the file, line and column of the first problem.

    Read once per invocation for each version of the file (its size and mtime; see `pipeline.invocation`).
    """
    if problem not in ("auto", "regression", "classification"):
        raise ValueError(f"problem must be auto, regression or classification. Received: problem={problem!r}")
    try:
        st = os.stat(path)
    except OSError as error:
        raise ValueError(f"{path}: cannot read the table ({error.strerror}).") from None
    key = ("table", os.path.abspath(path), st.st_size, st.st_mtime_ns, label_column, problem)
    return invocation.cached(key, lambda: _read(path, label_column, problem))


def _read(path: Path, label_column: str, problem: str) -> Table:
    """Read the file's bytes once: their sha256 (the manifest records it), then the table they hold."""
    try:
        data = Path(path).read_bytes()
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        header = next(reader, None)
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: cannot read the table as CSV ({error}).") from None
    sha256 = hashlib.sha256(data).hexdigest()
    if not header or not rows:
        raise ValueError(f"{path} is empty: expected a header line and at least one row of data.")
    header = [name.strip() for name in header]
    if label_column not in header:
        raise ValueError(
            f"{path} has no column {label_column!r} (--CreateShards-label-column). Its columns: {', '.join(header)}."
        )
    if len(header) < 2:
        raise ValueError(f"{path} has only the label column {label_column!r}: no feature to learn from.")
    label_index = header.index(label_column)
    feature_index = [i for i in range(len(header)) if i != label_index]
    features, raw_labels, lines = [], [], []
    for line, row in rows:
        if len(row) != len(header):
            raise ValueError(f"{path} line {line}: {len(row)} values, the header names {len(header)} columns.")
        values = []
        for i in feature_index:
            value = _number(row[i])
            if value is None:
                raise ValueError(
                    f"{path} line {line}, column {header[i]!r}: {row[i]!r} is not a finite number. Every column "
                    f"but the label ({label_column!r}) must be numeric: fix or remove that row."
                )
            values.append(value)
        features.append(tuple(values))
        raw_labels.append(row[label_index].strip())
        lines.append(line)
    numbers = [_number(label) for label in raw_labels]
    numeric = all(n is not None for n in numbers)
    if problem == "regression" or (problem == "auto" and numeric):
        if not numeric:
            line = lines[numbers.index(None)]
            raise ValueError(
                f"{path} line {line}, column {label_column!r}: {raw_labels[numbers.index(None)]!r} is not a number, "
                "and regression needs numeric labels (or use --CreateShards-problem classification)."
            )
        labels: tuple[float, ...] | tuple[str, ...] = tuple(float(n) for n in numbers)  # type: ignore[arg-type]
        return Table(
            path, tuple(header[i] for i in feature_index), tuple(features), labels, "regression", (), tuple(lines),
            sha256,
        )  # fmt: skip
    if numeric:  # classification of integer labels
        fractional = [i for i, n in enumerate(numbers) if n is not None and n != int(n)]
        if fractional:
            i = fractional[0]
            raise ValueError(
                f"{path} line {lines[i]}, column {label_column!r}: {raw_labels[i]!r} is not a whole number, so it "
                "cannot name a class. Use --CreateShards-problem regression for numeric targets."
            )
        names = [str(int(n)) for n in numbers]  # type: ignore[arg-type]
        class_names = tuple(sorted(set(names), key=int))
    else:
        names = raw_labels
        class_names = tuple(sorted(set(names)))
    if len(class_names) < 2:
        raise ValueError(
            f"{path}: column {label_column!r} holds a single class ({class_names[0]!r}); classification needs at "
            "least two classes."
        )
    return Table(
        path, tuple(header[i] for i in feature_index), tuple(features), tuple(names), "classification", class_names,
        tuple(lines), sha256,
    )  # fmt: skip
