"""The columns of a table as they come: each one's kind, statistics and vocabulary, from the train split.

A column is `numeric` (every value a number), `categorical` (text, or
integer codes when the user says so) or `ignore`d: a column that is the same
in every row, one whose values are (nearly) all different (a name, an id, free
text), dates, or one the user names. Missing cells (empty, `NA`, `NaN`, `null`,
`?`, in any letter case) are counted: a numeric column's are imputed with its
train mean, beside a missing indicator, inside the model; a categorical
column's are the value "" with a slot of their own. A category the train split
never had maps to the out-of-vocabulary slot. Standard library only: the
scheduling path may infer kinds before the shards exist.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MISSING = frozenset({"", "na", "nan", "null", "?", "n/a", "none"})  # compared lower-cased, stripped
KINDS = ("numeric", "categorical", "ignore")  # what --CreateShards-columns may set
MAX_VOCABULARY = 1000  # most frequent train categories kept; the rest go to the out-of-vocabulary slot
NEARLY_UNIQUE = 0.5  # a text column with more distinct values than this share of its rows is an id or free text
MIN_ID_ROWS = 20  # an integer column is an id when its values are distinct and consecutive, over at least this many
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def is_missing(cell: str) -> bool:
    """Whether a cell holds no value (empty, NA, NaN, null, ?, ...)."""
    return cell.strip().lower() in MISSING


def number(cell: str) -> float | None:
    """The cell's finite number, or None."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Column:
    """One column of a table: what it is, and what the train split says of it."""

    name: str  # as the header spells it
    feature: str  # its name in the shards and among the model's inputs
    kind: str  # numeric, categorical or ignore
    reason: str  # why that kind, in words
    missing: int = 0  # missing cells in the train split
    mean: float = 0.0  # numeric: of the train split's values
    variance: float = 1.0
    vocabulary: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # categorical: (value, train count)

    @property
    def used(self) -> bool:
        return self.kind != "ignore"

    @property
    def width(self) -> int:
        """Numbers this column becomes in front of the network."""
        if self.kind == "numeric":
            return 2 if self.missing else 1
        if self.kind == "categorical":
            return len(self.vocabulary) + 1  # the out-of-vocabulary slot
        return 0

    def value(self, cell: str) -> float | str:
        """The value written to the shards: a float (NaN when missing) or the text ("" when missing)."""
        if self.kind == "numeric":  # a cell of the validation split that is no number counts as missing
            value = number(cell)
            return math.nan if value is None else value
        return "" if is_missing(cell) else cell.strip()

    def describe(self) -> str:
        """One line: name, kind and what the train split holds."""
        missing = f", {self.missing} missing" if self.missing else ""
        if self.kind == "numeric":
            return f"{self.name}: numeric (mean {self.mean:.4g}, std {math.sqrt(self.variance):.4g}{missing})"
        if self.kind == "categorical":
            shown = ", ".join(f"{v or '(missing)'} {c}" for v, c in self.vocabulary[:5])
            more = f", ... {len(self.vocabulary) - 5} more" if len(self.vocabulary) > 5 else ""
            return f"{self.name}: categorical, {len(self.vocabulary)} categories ({shown}{more}){missing}"
        return f"{self.name}: ignored ({self.reason})"

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"column": self.name, "kind": self.kind, "reason": self.reason}
        data["missing"] = self.missing
        if self.kind == "numeric":
            data.update(mean=self.mean, variance=self.variance)
        if self.kind == "categorical":
            data["vocabulary"] = [list(entry) for entry in self.vocabulary]
        return data


def feature_names(header: Sequence[str], reserved: Sequence[str]) -> list[str]:
    """A feature name per column: lower-case letters, digits and underscores, unique, none of `reserved`."""
    taken = set(reserved)
    names = []
    for name in header:
        base = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "column"
        if base[0].isdigit():
            base = "c_" + base
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate)
        names.append(candidate)
    return names


def infer(name: str, feature: str, cells: Sequence[str], override: str | None = None) -> Column:
    """The column `name` from its train split `cells`; `override` (numeric, categorical or ignore) sets its kind.

    Raises ValueError when a column set numeric holds a cell that is not a number.
    """
    present = [cell.strip() for cell in cells if not is_missing(cell)]
    missing = len(cells) - len(present)
    if override == "ignore":
        return Column(name, feature, "ignore", "--CreateShards-columns says so", missing)
    numbers = [number(cell) for cell in present]
    numeric = bool(present) and all(n is not None for n in numbers)
    if override == "numeric":
        if not numeric:
            bad = next((cell for cell, n in zip(present, numbers, strict=True) if n is None), None)
            raise ValueError(
                f"column {name!r} is set numeric (--CreateShards-columns), but it holds {bad!r}, not a number"
                if bad is not None
                else f"column {name!r} is set numeric (--CreateShards-columns), but it has no value in the train split"
            )
        return _numeric(name, feature, numbers, missing, "--CreateShards-columns says so")  # type: ignore[arg-type]
    if override == "categorical":
        return _categorical(name, feature, present, missing, "--CreateShards-columns says so")
    if not present:
        return Column(name, feature, "ignore", "no value in the train split", missing)
    distinct = len(set(present))
    if distinct == 1 and not missing:
        return Column(name, feature, "ignore", f"the same value in every row: {present[0]!r}", missing)
    if numeric:
        values: list[float] = numbers  # type: ignore[assignment]
        if (
            len(values) >= MIN_ID_ROWS
            and distinct == len(values)
            and all(v == int(v) for v in values)
            and max(values) - min(values) + 1 == len(values)
        ):
            return Column(name, feature, "ignore", "consecutive whole numbers unique to each row: an id", missing)
        return _numeric(name, feature, values, missing, "numbers")
    if all(DATE.match(cell) for cell in present):
        return Column(
            name, feature, "ignore",
            "dates or times: turn them into numbers (days, a month) in columns of their own to use them",
            missing,
        )  # fmt: skip
    if distinct > NEARLY_UNIQUE * len(present) and len(present) >= MIN_ID_ROWS:
        unique = "unique to each row" if distinct == len(present) else f"{distinct} different values in {len(present)}"
        return Column(name, feature, "ignore", f"text {unique}: a name, an id or free text", missing)
    return _categorical(name, feature, present, missing, "text")


def _numeric(name: str, feature: str, values: list[float], missing: int, reason: str) -> Column:
    mean = math.fsum(values) / len(values)
    variance = math.fsum((v - mean) ** 2 for v in values) / len(values)
    return Column(name, feature, "numeric", reason, missing, mean, variance)


def _categorical(name: str, feature: str, present: list[str], missing: int, reason: str) -> Column:
    counts = Counter(present)
    if missing:
        counts[""] = missing  # missing cells: a category of their own (its slot is the missing indicator)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_VOCABULARY]
    return Column(name, feature, "categorical", reason, missing, vocabulary=tuple(ordered))


def check_overrides(overrides: Mapping[str, str], header: Sequence[str], label_column: str) -> None:
    """Raise ValueError for an override of an unknown column, of the label, or to an unknown kind."""
    for name, kind in overrides.items():
        if name not in header:
            raise ValueError(
                f"--CreateShards-columns names {name!r}, which is not a column. Its columns: {', '.join(header)}."
            )
        if name == label_column:
            raise ValueError(f"--CreateShards-columns names the label column {name!r}: it is not a feature.")
        if kind not in KINDS:
            raise ValueError(f"--CreateShards-columns: {name!r} must be one of {', '.join(KINDS)}. Received: {kind!r}")
