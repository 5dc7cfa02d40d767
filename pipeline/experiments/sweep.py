"""`python -m pipeline sweep TASK --Task-param a,b ...`: a grid of variants in one Luigi invocation.

A value with top-level commas is a list of values, as in Hydra's multirun
(`0.01,0.003`; `[64],[128, 128]` is two lists; `[100, 100]` stays one value).
The grid is every combination. Each variant is TASK built with a `variant`
that hands the values it sets to the stages above it (stage.Stage.stage_above),
so stages the variants share are one task and run once, and the rest of the
command line (`--TrainEstimator-batch-size 64`, `--workers 2`,
`--local-scheduler`, the scheduler's address) works as with `luigi`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register

from pipeline.core.stage import Stage, dag
from pipeline.errors import ParameterError


@dataclass(frozen=True)
class Axis:
    """One swept parameter and its values, parsed by the parameter."""

    family: str
    name: str
    flag: str
    values: tuple[Any, ...]


def split_top_level(text: str) -> list[str]:
    """`text` split at the commas outside brackets, braces, parentheses and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def stage_flag(flag: str) -> tuple[type[Stage], str] | None:
    """(stage class, parameter name) of a `--Family-param-name` flag, or None for any other flag."""
    for family in sorted(Register.task_names(), key=len, reverse=True):
        prefix = f"--{family}-"
        cls = Register.get_task_cls(family)
        if flag.startswith(prefix) and isinstance(cls, type) and issubclass(cls, Stage):
            name = flag[len(prefix) :].replace("-", "_")
            if name in dict(cls.get_params()):
                return cls, name
    return None


def parse(argv: Sequence[str]) -> tuple[type[Stage], list[Axis], list[str]]:
    """The target stage, the swept parameters, and the arguments left for Luigi's own parser."""
    if not argv or argv[0].startswith("-"):
        raise ParameterError("python -m pipeline sweep needs a task first, e.g. sweep PlotInference --Task-param a,b")
    try:
        target = Register.get_task_cls(argv[0])
    except Exception:
        raise ParameterError(f"sweep: no task {argv[0]!r}. Expected a stage, e.g. PlotInference.") from None
    if not (isinstance(target, type) and issubclass(target, Stage)):
        raise ParameterError(f"sweep: {argv[0]} is not a stage of the pipeline.")
    axes: list[Axis] = []
    passthrough = [argv[0]]
    rest = list(argv[1:])
    while rest:
        flag = rest.pop(0)
        found = stage_flag(flag.split("=", 1)[0])
        if found is None or (not rest and "=" not in flag) or (rest and rest[0].startswith("--") and "=" not in flag):
            passthrough.append(flag)
            continue
        value = flag.split("=", 1)[1] if "=" in flag else rest.pop(0)
        flag = flag.split("=", 1)[0]
        texts = split_top_level(value)
        if len(texts) == 1:
            passthrough += [flag, value]
            continue
        cls, name = found
        param = dict(cls.get_params())[name]
        values = []
        for text in texts:
            try:
                values.append(param.normalize(param.parse(text)))
            except (ValueError, TypeError) as error:
                raise ParameterError(f"{flag} value {text!r} is not accepted: {error}") from None
        if any(axis.flag == flag for axis in axes):
            raise ParameterError(f"{flag} is given twice: give all its values at once, e.g. {flag} a,b,c")
        axes.append(Axis(cls.get_task_family(), name, flag, tuple(values)))
    for axis in axes:
        if axis.family != target.get_task_family() and axis.family not in target.families_above():
            raise ParameterError(f"{axis.flag}: {axis.family} is not a stage of {target.get_task_family()}'s DAG.")
    return target, axes, passthrough


def variants(axes: Sequence[Axis]) -> list[dict[str, dict[str, Any]]]:
    """Every combination of the axes' values, as {family: {parameter: value}}."""
    grid = []
    for combination in itertools.product(*(axis.values for axis in axes)):
        variant: dict[str, dict[str, Any]] = {}
        for axis, value in zip(axes, combination, strict=True):
            variant.setdefault(axis.family, {})[axis.name] = value
        grid.append(variant)
    return grid


def tasks(target: type[Stage], grid: Sequence[dict[str, dict[str, Any]]]) -> list[Stage]:
    """The target stage of each variant (`Stage.with_variant`)."""
    return [target.with_variant(variant) for variant in grid]


@dataclass(frozen=True)
class Outcome:
    """What a sweep did: Luigi's result, the swept parameters, and the model folder of each variant."""

    result: luigi.execution_summary.LuigiRunResult
    axes: list[Axis]
    model_dirs: list[Path]  # in the grid's order; empty when the target stage is above training


def run(argv: Sequence[str]) -> Outcome:
    """Build every variant's DAG in one Luigi invocation (the command line's scheduler and workers)."""
    target, axes, passthrough = parse(argv)
    with CmdlineParser.global_instance(passthrough):  # luigi.build reads --workers, --local-scheduler... there
        roots = tasks(target, variants(axes))
        result = luigi.build(roots, detailed_summary=True)
        # Inside the command line's context: the stages above read its other flags.
        models = [stage.output_dir() for root in roots for stage in dag(root) if stage.artifact_kind == "models"]
    return Outcome(result, axes, list(dict.fromkeys(models)))
