"""Which runs to show, and in which groups: `runs --where ...` and one table per data set.

A condition is `KEY OP VALUE` with OP one of `=`, `!=`, `<`, `<=`, `>`, `>=`
(`--where source=sine`, `--where TrainEstimator.learning_rate<0.01`,
`--where validation.mse<=0.02`, `--where name=baseline`). KEY names a
parameter (`Stage.name`, or the name alone when one stage has it), a metric,
or the run's `name`; VALUE is compared as a number when both sides are
numbers, else as the text the table shows. Several conditions all hold.

Runs of different data sets share few parameters and no metric scale: the
runs table and the report show one group per data set and problem
(`sine, regression`; `image folder /data/my_photos, classification`), each
with the columns that differ inside it.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ParameterError
from pipeline.experiments.runs import Run

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "=": operator.eq,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|<|>|=)\s*(.*?)\s*$")
SOURCE_PATHS = ("CreateShards.image_dir", "CreateShards.csv")  # what names a data set besides its kind


@dataclass(frozen=True)
class Condition:
    """One `--where KEY OP VALUE`."""

    key: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


def parse(text: str) -> Condition:
    """A condition from its text; ParameterError naming the accepted form otherwise."""
    match = _CONDITION.match(text)
    if not match:
        raise ParameterError(
            "--where takes KEY OP VALUE with OP one of =, !=, <, <=, >, >=, e.g. source=sine or "
            f"TrainEstimator.learning_rate<0.01. Received: {text!r}"
        )
    key, op, value = match.groups()
    return Condition(key, "=" if op == "==" else op, value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def value_of(run: Run, key: str) -> tuple[bool, Any]:
    """(found, value) of `key` in a run: its name, a parameter (`Stage.name` or `name`), or a metric."""
    if key in ("name", "run.name"):
        return True, run.label.get("name") or None
    if key in run.params:
        return True, run.params[key]
    if key in run.metrics:
        return True, run.metrics[key]
    matches = [k for k in run.params if k.split(".", 1)[1] == key]
    matches += [k for k in run.metrics if k.rsplit(".", 1)[-1] == key and k not in matches]
    if len(matches) == 1:
        return True, run.params.get(matches[0], run.metrics.get(matches[0]))
    if len(matches) > 1:
        raise ParameterError(f"--where {key} names several columns ({', '.join(sorted(matches))}): name one of them.")
    return False, None


def holds(condition: Condition, run: Run) -> bool:
    """Whether `condition` holds for `run` (a run without the key fails every condition but !=)."""
    found, value = value_of(run, condition.key)
    if not found or value is None:
        return condition.op == "!="
    compare = OPERATORS[condition.op]
    left, right = _number(value), _number(condition.value)
    if left is not None and right is not None:
        return compare(left, right)
    if condition.op not in ("=", "!="):
        return False  # a text has no order here: `source<sine` holds for no run
    return compare(_text(value), condition.value)


def where(runs: Sequence[Run], conditions: Sequence[Condition]) -> list[Run]:
    """The runs every condition holds for; ParameterError when a key names nothing in any run."""
    for condition in conditions:
        if not any(value_of(run, condition.key)[0] for run in runs):
            keys = sorted({k for run in runs for k in run.params} | {k for run in runs for k in run.metrics})
            raise ParameterError(
                f"--where {condition.key} names no parameter or metric of these runs (e.g. "
                f"{', '.join(keys[:6])}; `python -m pipeline runs --all` shows every one). "
                f"Received: {str(condition)!r}"
            )
    return [run for run in runs if all(holds(condition, run) for condition in conditions)]


def data_set(run: Run) -> str:
    """The data set and problem a run trained on: `sine, regression`, `image folder /x/photos, classification`."""
    kind = str(run.params.get("CreateShards.source", "?"))
    path = next((str(run.params[key]) for key in SOURCE_PATHS if run.params.get(key)), "")
    problem = run.params.get("TrainEstimator.problem")
    words = {"image_folder": "image folder", "table": "table"}.get(kind, kind)
    return ", ".join(part for part in (f"{words} {path}".strip(), str(problem) if problem else "") if part)


def groups(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """The runs by data set and problem, in the order each group's first run appears."""
    found: dict[str, list[Run]] = {}
    for run in runs:
        found.setdefault(data_set(run), []).append(run)
    return list(found.items())
