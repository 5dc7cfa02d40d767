"""A user's table of data as it comes: a CSV file with a header and one label column.

Standard library only (and the invocation's memo): `CreateShards` reads and
checks the table when it is constructed, on Luigi's scheduling path, so that a
bad table stops the run before any work with one message naming the file, the
line and the column. The file is read once per invocation (`invocation.cached`),
its bytes once: the table and their sha256 (which the manifest records).
Cells are kept as text: what each column is (numeric, categorical, ignored)
is inferred from the train split (`columns.py`). A row whose label is missing
(`columns.is_missing`) is left out, and its line is recorded. The problem
follows the labels: numbers mean regression, anything else classification
(class names sorted); `problem="classification"` makes integer labels classes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core import invocation
from pipeline.errors import DataError
from pipeline.etl import columns, image_folder
from pipeline.etl.columns import Column
from pipeline.schema import Schema

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger("luigi-interface")  # Luigi prints this logger in its run log


@dataclass(frozen=True)
class Table:
    """A checked table: the feature columns' cells by row, labels, and the problem they pose."""

    path: Path
    label_column: str
    feature_columns: tuple[str, ...]  # the header without the label, in file order
    cells: tuple[tuple[str, ...], ...]  # each labelled row's feature cells, as text, in file order
    labels: tuple[float, ...] | tuple[str, ...]  # numbers (regression) or class names (classification)
    problem: str  # "regression" or "classification"
    class_names: tuple[str, ...]  # sorted; () for regression
    lines: tuple[int, ...]  # the file's line number of each labelled row (the header is line 1)
    unlabelled: tuple[int, ...]  # lines of the rows left out: their label is missing
    sha256: str  # of the file's bytes, as read


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
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ValueError(f"{path}: the header names column {duplicated[0]!r} twice. Give each column its own name.")
    label_index = header.index(label_column)
    feature_index = [i for i in range(len(header)) if i != label_index]
    cells, raw_labels, lines, unlabelled = [], [], [], []
    for line, row in rows:
        if len(row) != len(header):
            raise ValueError(f"{path} line {line}: {len(row)} values, the header names {len(header)} columns.")
        if columns.is_missing(row[label_index]):
            unlabelled.append(line)
            continue
        cells.append(tuple(row[i] for i in feature_index))
        raw_labels.append(row[label_index].strip())
        lines.append(line)
    if not raw_labels:
        raise ValueError(f"{path}: column {label_column!r} has no value in any row: nothing to learn.")
    features = tuple(header[i] for i in feature_index)
    numbers = [columns.number(label) for label in raw_labels]
    numeric = all(n is not None for n in numbers)
    if problem == "regression" or (problem == "auto" and numeric):
        if not numeric:
            i = numbers.index(None)
            raise ValueError(
                f"{path} line {lines[i]}, column {label_column!r}: {raw_labels[i]!r} is not a number, "
                "and regression needs numeric labels (or use --CreateShards-problem classification)."
            )
        labels: tuple[float, ...] | tuple[str, ...] = tuple(float(n) for n in numbers)  # type: ignore[arg-type]
        return Table(
            path, label_column, features, tuple(cells), labels, "regression", (), tuple(lines), tuple(unlabelled),
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
        path, label_column, features, tuple(cells), tuple(names), "classification", class_names, tuple(lines),
        tuple(unlabelled), sha256,
    )  # fmt: skip


def split_counts(count: int, validation_fraction: float) -> dict[str, int]:
    """Examples of a set of `count` that go to each split."""
    num_validation = image_folder.num_validation(count, validation_fraction)
    return {"train": count - num_validation, "validation": num_validation}


# What a row of a table is: (the features' names, their values: floats (NaN: missing) or text, its label:
# a number or a class index, its line in the file). The names are one tuple shared by every row.
TableRow = tuple[tuple[str, ...], tuple[float | str, ...], float | int, int]
MAX_NAMED_LINES = 5  # unlabelled rows named in the run log (the manifest lists them all)
LABEL, LINE = "label", "line"  # the label's and the row's line's features (no column's feature takes them)


@dataclass(frozen=True)
class TableSource:
    """A CSV table as it comes (`read_table`): `label_column` is the label, the other columns features.

    Classification splits each class on its own (as for images), regression
    the whole table; each split is then shuffled globally. Each column's kind
    (numeric, categorical or ignored), its train statistics and vocabulary
    come from the train split (`columns.infer`; `columns` overrides kinds by
    column name). The shards hold the raw values, one feature per column
    (numbers with NaN where missing, text with "" where missing); the model
    imputes, scales and looks them up (training/preprocessing.py).
    """

    kind = "table"

    csv: Path
    label_column: str
    problem: str  # auto, regression or classification
    columns: Mapping[str, str]  # column name -> numeric, categorical or ignore
    validation_fraction: float
    seed: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "csv", Path(self.csv))  # given as the parameter's string

    @property
    def table(self) -> Table:
        """The table, read and checked once per invocation and version of the file (raises ValueError
        naming the file, line and column)."""
        return read_table(self.csv, self.label_column, self.problem)

    def validate(self) -> None:
        """Raise ValueError on a bad table or column override, or a class too small for the split."""
        if not self.label_column:
            raise ValueError("A table needs its label column: --CreateShards-label-column NAME.")
        table = self.table
        columns.check_overrides(self.columns, table.feature_columns, self.label_column)
        needed = image_folder.min_images_per_class(self.validation_fraction)
        if table.problem == "classification":
            counts = {name: 0 for name in table.class_names}
            for label in table.labels:
                counts[str(label)] += 1
            too_few = {name: count for name, count in counts.items() if count < needed}
            if too_few:
                listed = ", ".join(f"{name!r} ({count})" for name, count in too_few.items())
                raise ValueError(
                    f"{self.csv}: with --CreateShards-validation-fraction {self.validation_fraction} every class "
                    f"needs at least {needed} rows (one for validation, the rest for training). Too few rows of "
                    f"class {listed}."
                )
        elif len(table.labels) < needed:
            raise ValueError(f"{self.csv} has {len(table.labels)} rows: at least {needed} are needed to split it.")

    def check(self) -> None:
        """`validate`, then log what each column is, once, and the rows left out for want of a label."""
        self.validate()
        found = self.feature_columns()
        for column in found:
            logger.info("CreateShards: column %s", column.describe())
        if not any(column.used for column in found):
            raise DataError(
                f"{self.csv}: no column can be a feature ({'; '.join(c.describe() for c in found)}). "
                'Set a column\'s kind with --CreateShards-columns \'{"NAME": "numeric"}\'.'
            )
        unlabelled = self.table.unlabelled
        if unlabelled:
            more = f" and {len(unlabelled) - MAX_NAMED_LINES} more" if len(unlabelled) > MAX_NAMED_LINES else ""
            logger.warning(
                "CreateShards: %d row(s) of %s have no %r and are left out (the manifest lists them): line %s%s",
                len(unlabelled), self.csv, self.label_column, ", ".join(map(str, unlabelled[:MAX_NAMED_LINES])), more,
            )  # fmt: skip

    def schema(self) -> Schema:
        counts = {"train": 0, "validation": 0}
        for indices in self._groups():
            for split, count in split_counts(len(indices), self.validation_fraction).items():
                counts[split] += count
        width = sum(column.width for column in self.feature_columns())
        return Schema(self.table.problem, (width,), self.table.class_names, counts, self.kind)

    @property
    def to_features(self) -> Any:
        return table_features

    def feature_columns(self) -> list[Column]:
        """Every feature column: its kind, statistics and vocabulary from the train split (once per invocation)."""
        table = self.table
        overrides = tuple(sorted(self.columns.items()))
        key = ("table columns", table.sha256, self.label_column, self.problem, overrides, self.validation_fraction,
               self.seed)  # fmt: skip

        def infer() -> list[Column]:
            train = self.split_indices()["train"]
            names = columns.feature_names(table.feature_columns, reserved=(LABEL, LINE))
            return [
                columns.infer(name, feature, [table.cells[i][k] for i in train], self.columns.get(name))
                for k, (name, feature) in enumerate(zip(table.feature_columns, names, strict=True))
            ]

        found: list[Column] = invocation.cached(key, infer)
        return found

    def _groups(self) -> list[list[int]]:
        """Row indices split apart before the split: one group per class, or one group (regression)."""
        table = self.table
        if table.problem != "classification":
            return [list(range(len(table.labels)))]
        by_class: dict[str, list[int]] = {name: [] for name in table.class_names}
        for i, label in enumerate(table.labels):
            by_class[str(label)].append(i)
        return list(by_class.values())

    def split_indices(self) -> dict[str, list[int]]:
        """Row indices per split: stratified by class, then shuffled globally."""
        import numpy as np

        rs = np.random.RandomState(self.seed)
        splits: dict[str, list[int]] = {"train": [], "validation": []}
        for indices in self._groups():
            order = rs.permutation(len(indices))
            n_val = split_counts(len(indices), self.validation_fraction)["validation"]
            splits["validation"] += [indices[i] for i in order[:n_val]]
            splits["train"] += [indices[i] for i in order[n_val:]]
        return {split: [rows[i] for i in rs.permutation(len(rows))] for split, rows in splits.items()}

    def rows(self) -> dict[str, list[TableRow]]:
        table = self.table
        index = {name: k for k, name in enumerate(table.class_names)}
        used = [(k, column) for k, column in enumerate(self.feature_columns()) if column.used]
        names = tuple(column.feature for _, column in used)

        def row(i: int) -> TableRow:
            value = table.labels[i]
            label = index[str(value)] if table.problem == "classification" else float(value)
            return names, tuple(column.value(table.cells[i][k]) for k, column in used), label, table.lines[i]

        return {split: [row(i) for i in indices] for split, indices in self.split_indices().items()}

    def manifest(self) -> dict[str, Any]:
        """The features' spec and schema (each column's kind, train statistics, vocabulary), the classes,
        and the rows left out for want of a label."""
        table = self.table
        splits = self.split_indices()
        found = self.feature_columns()
        used = [column for column in found if column.used]
        classification = table.problem == "classification"
        features: dict[str, Any] = {
            column.feature: {"dtype": "float32" if column.kind == "numeric" else "string", "shape": []}
            for column in used
        }
        features[LABEL] = {"dtype": "int64", "shape": []} if classification else {"dtype": "float32", "shape": [1]}
        features[LINE] = {"dtype": "int64", "shape": []}
        manifest: dict[str, Any] = {
            "source": self.kind,
            "csv": str(self.csv),
            "problem": table.problem,
            "label_column": self.label_column,
            "features": features,
            "inputs": [column.feature for column in used],
            "input_shape": [sum(column.width for column in used)],
            "label": LABEL,
            "example_id": LINE,
            "columns": {column.feature: column.as_dict() for column in found},
            "unlabelled": {"count": len(table.unlabelled), "lines": list(table.unlabelled)},
            "source_sha256": {Path(self.csv).name: table.sha256},  # of the bytes the table was read from
        }
        if not classification:  # the model predicts in these units: its output is rescaled from them
            train = [float(table.labels[i]) for i in splits["train"]]
            mean = math.fsum(train) / len(train)
            manifest["label_statistics"] = {
                "mean": mean,
                "variance": math.fsum((v - mean) ** 2 for v in train) / len(train),
            }
        if classification:
            manifest["class_names"] = list(table.class_names)
            manifest["class_counts"] = {
                split: {name: sum(1 for i in rows if table.labels[i] == name) for name in table.class_names}
                for split, rows in splits.items()
            }
        return manifest

    def summary(self) -> dict[str, Any]:
        """What `status` shows of the table: its columns by kind, and the rows left out."""
        found = self.feature_columns()
        return {
            "columns": {kind: [c.name for c in found if c.kind == kind] for kind in columns.KINDS},
            "unlabelled": len(self.table.unlabelled),
        }


def table_features(row: TableRow) -> tuple[dict[str, Any], dict[str, str]]:
    """The Example features of one row of a table (no file read: the table was read whole)."""
    names, values, label, line = row
    features: dict[str, Any] = {
        name: [value.encode() if isinstance(value, str) else value] for name, value in zip(names, values, strict=True)
    }
    return {**features, LABEL: [label], LINE: [line]}, {}
