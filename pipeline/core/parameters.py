"""Parameter values as Luigi parses them, with errors that name the flag, and the limits of every type.

A task class that mixes in `CheckedParameters` (every stage and `Repro`) gets,
for each of its parameters, whether set on the command line or in luigi.cfg:

- a value that does not parse is a `ParameterError` naming the flag and what it
  accepts, also for the task named on the command line (`luigi ... TrainEstimator
  --batch-size x`, which Luigi parses outside the task: `install()`);
- an empty value on the command line (`--TrainEstimator-batch-size ""`, an unset
  shell variable) counts: Luigi would take it for no value and use the default
  without a word. It is refused unless the parameter accepts an empty string,
  which then overrides the default;
- limits that hold for every parameter of a type, whatever it means: integers fit
  in 64 bits (TensorFlow and NumPy count in int64), numbers are finite in float32
  (the precision the model computes in), a seed is in [0, 2**32) (NumPy's legacy
  seeding, which `keras.utils.set_random_seed` uses, takes no more), no string
  holds a NUL character (no path or name can), a JSON list is a list and a JSON
  object an object.

What a value means for its stage (a positive batch, a split it fits in) is
checked by the stage's `validate()`. Standard library and Luigi only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.freezing import FrozenOrderedDict

from pipeline.errors import ParameterError

INT64_MAX = 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38
SEED_LIMIT = 2**32


def flag(family: str, name: str) -> str:
    """The command-line flag of a task's parameter, e.g. `--TrainEstimator-batch-size`."""
    return f"--{family}-{name.replace('_', '-')}"


def accepted(param: luigi.Parameter) -> str:
    """What a Luigi parameter accepts, in words."""
    if isinstance(param, luigi.ChoiceParameter):
        return "one of " + ", ".join(map(str, param._choices))
    if isinstance(param, luigi.BoolParameter):
        return "true or false (the flag alone means true)"
    if isinstance(param, luigi.IntParameter):
        return "an integer"
    if isinstance(param, luigi.FloatParameter):
        return "a number"
    if isinstance(param, luigi.ListParameter):
        return "a JSON list, e.g. [100, 100]"
    if isinstance(param, luigi.DictParameter):
        return 'a JSON object, e.g. {"width": 64}'
    return "a string"


class BooleanParameter(luigi.BoolParameter):
    """A boolean with one syntax everywhere: `--Task-name true`, `--Task-name false`, or the bare flag for true.

    Luigi's default (implicit parsing) makes a boolean a flag that takes no value, so that
    `--CreateShards-skip-unreadable true` leaves `true` as an unknown parameter, while a
    parameter whose luigi.cfg default is true needs explicit parsing to be turned off.
    Every boolean of the pipeline takes both forms; a value other than true or false is
    refused with what is accepted.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(parsing=luigi.BoolParameter.EXPLICIT_PARSING, **kwargs)

    def parse(self, x: Any) -> bool:
        try:
            return bool(super().parse(x))
        except ValueError:
            raise ValueError(f"Expected true or false (the flag alone means true). Received: {x!r}") from None


class run(luigi.Config):  # noqa: N801 (a Luigi configuration class: its name is the [run] section)
    """A person's name and note for a run: `--name baseline --note "first try"` (or [run] in luigi.cfg).

    Not part of any identity: they are kept in the markers of the stages the run makes, and
    `python -m pipeline runs`, `report` and the web UI show them.
    """

    use_cmdline_section = False  # --name and --note, not --run-name
    name = luigi.Parameter(default="", description="A name for this run (kept with what it makes, shown by runs).")
    note = luigi.Parameter(default="", description="A note on this run (kept with what it makes, shown by runs).")


def run_label() -> dict[str, str]:
    """The run's `name` and `note` that are set (from the command line or luigi.cfg), e.g. {"name": "baseline"}."""
    label = run()
    return {key: value for key, value in (("name", label.name), ("note", label.note)) if value}


class DataPathParameter(luigi.Parameter[str]):
    """A path to the user's data, held as the real path it names: `my_photos` from `work/`,
    `/tmp/x/work/my_photos`, `~/work/my_photos` and a symbolic link to it are one value, so one
    identity (relative paths are relative to the working directory). Empty: not set."""

    def normalize(self, x: Any) -> str:
        text = str(x)
        if not text.strip() or "\0" in text:  # not set; a NUL is refused by the limits below, named
            return text
        return os.path.realpath(os.path.expanduser(text))


def _limit_problem(name: str, value: Any) -> str | None:
    """Why `value` (a parsed parameter value, or a part of one) breaks a limit of its type, if it does."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if name == "seed" or name.endswith("_seed"):
            return None if 0 <= value < SEED_LIMIT else f"must be a seed in [0, {SEED_LIMIT - 1}]"
        return None if abs(value) <= INT64_MAX else f"must fit in a 64-bit integer (at most {INT64_MAX} in size)"
    if isinstance(value, float):
        finite = math.isfinite(value) and abs(value) <= FLOAT32_MAX
        return None if finite else f"must be a finite number (at most {FLOAT32_MAX:.4g} in size)"
    if isinstance(value, str):
        return "must not contain a NUL character" if "\0" in value else None
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return next((problem for item in value if (problem := _limit_problem(name, item))), None)
    return None


def check_limits(family: str, values: list[tuple[str, Any]], params: dict[str, luigi.Parameter]) -> None:
    """Raise ParameterError for the first parameter value that breaks a limit of its type."""
    for name, value in values:
        param = params.get(name)
        if isinstance(param, luigi.DictParameter) and not isinstance(value, Mapping):
            problem: str | None = 'must be a JSON object, e.g. {"width": 64}'
        elif isinstance(param, luigi.ListParameter) and not isinstance(value, (list, tuple)):
            problem = "must be a JSON list, e.g. [100, 100]"
        else:
            problem = _limit_problem(name, value)
        if problem:
            shown = value if not isinstance(value, str) else repr(value)[:80]
            raise ParameterError(f"{flag(family, name)} {problem}. Received: {shown}")


def _explicit_empty(cls: type[luigi.Task], params: list[tuple[str, luigi.Parameter]]) -> dict[str, Any]:
    """The parameters given an empty value on the command line, parsed (raises if one refuses it)."""
    parser = CmdlineParser.get_instance()
    if parser is None:
        return {}
    family = cls.get_task_family()
    is_root = getattr(parser.known_args, "root_task", None) == family
    empty = {}
    for name, param in params:
        given = [getattr(parser.known_args, param._parser_global_dest(name, family), None)]
        if is_root:
            given.append(getattr(parser.known_args, name, None))
        if "" not in given:
            continue
        try:
            empty[name] = param.normalize(param.parse(""))
        except (ValueError, TypeError, KeyError):
            raise ParameterError(f"{flag(family, name)} is empty. Expected {accepted(param)}.") from None
    return empty


class CheckedParameters:
    """Mixin for a `luigi.Task`: parameter errors that name the flag, and the limits above."""

    @classmethod
    def get_param_values(cls, params: Any, args: Any, kwargs: Any) -> Any:
        """Luigi's parameter resolution, with errors that name the parameter and what it accepts."""
        family = cls.get_task_family()  # type: ignore[attr-defined]
        kwargs = {**_explicit_empty(cls, params), **kwargs}  # type: ignore[arg-type]
        try:
            values = super().get_param_values(params, args, kwargs)  # type: ignore[misc]
        except luigi.parameter.MissingParameterException as error:
            raise ParameterError(f"{error}. Set it in luigi.cfg under [{family}] or on the command line.") from None
        except (ValueError, TypeError, OverflowError) as error:
            for name, param in params:
                if name in kwargs:
                    continue
                try:
                    param.task_value(family, name)
                except (ValueError, TypeError, OverflowError) as bad:
                    detail = str(bad) if "Expected" in str(bad) else f"{bad}. Expected {accepted(param)}."
                    raise ParameterError(
                        f"{flag(family, name)} (or [{family}] {name} in luigi.cfg) is not accepted: {detail}"
                    ) from None
            raise ParameterError(f"Bad parameter for {family}: {error}") from None
        check_limits(family, values, dict(params))
        return values


def install() -> None:
    """Make a value Luigi cannot parse for the task named on the command line a ParameterError.

    Luigi parses that task's own flags (`TrainEstimator --batch-size x`) in
    `CmdlineParser._get_task_kwargs`, outside the task, where an error escapes
    as a traceback. Idempotent.
    """
    original = CmdlineParser._get_task_kwargs
    if getattr(original, "names_flags", False):
        return

    def _get_task_kwargs(self: CmdlineParser) -> dict[str, Any]:
        try:
            return original(self)
        except (ValueError, TypeError, OverflowError):
            cls = self._get_task_cls()
            for name, param in cls.get_params():
                value = getattr(self.known_args, name, None)
                if value:
                    try:
                        param.normalize(param.parse(value))
                    except (ValueError, TypeError, OverflowError) as bad:
                        detail = str(bad) if "Expected" in str(bad) else f"{bad}. Expected {accepted(param)}."
                        raise ParameterError(
                            f"--{name.replace('_', '-')} of {cls.get_task_family()} is not accepted: {detail}"
                        ) from None
            raise

    _get_task_kwargs.names_flags = True  # type: ignore[attr-defined]
    CmdlineParser._get_task_kwargs = _get_task_kwargs  # type: ignore[method-assign]


# --- TrainEstimator's parameter types -------------------------------------------------


class PerNetworkParameter(luigi.Parameter[Any]):
    """One value for every network, or one per network as JSON: `0.01` or `{"mlp": 0.01, "cnn": 0.003}`."""

    def __init__(self, *, value_type: type, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value_type = value_type

    def parse(self, x: str) -> Any:
        with contextlib.suppress(ValueError):
            return self.value_type(x)  # one number, as Python spells it: 0.01, 1e-2, nan, 6000
        try:
            value = json.loads(x)
        except ValueError:
            raise ValueError(self._expected(x)) from None
        return self._checked(value)

    def normalize(self, x: Any) -> Any:
        return self.parse(x) if isinstance(x, str) else self._checked(x)

    def _checked(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return FrozenOrderedDict(sorted((str(k), self._number(v)) for k, v in value.items()))
        return self._number(value)

    def _number(self, v: Any) -> Any:
        integral = isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v == int(v))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.value_type is int and not integral):
            raise ValueError(self._expected(v))
        return self.value_type(v)

    def _expected(self, received: Any) -> str:
        one, many = ("an integer", "integers") if self.value_type is int else ("a number", "numbers")
        example = '{"mlp": ..., "cnn": ...}'
        return f"Expected {one}, or a JSON object of {many} by network like {example}. Received: {received!r}"

    def serialize(self, x: Any) -> str:
        return json.dumps(dict(x) if isinstance(x, Mapping) else x)


class _AutoOrNumberParameter(luigi.Parameter[Any]):
    """`auto` (resolved later) or a number that `number` converts, raising ValueError naming `expected`."""

    expected = "a number"

    def number(self, x: Any) -> Any:
        return float(x)

    def parse(self, x: str) -> Any:
        return "auto" if x.strip() == "auto" else self.normalize(x)

    def normalize(self, x: Any) -> Any:
        if x == "auto":
            return "auto"
        try:
            if isinstance(x, bool):
                raise ValueError
            return self.number(x)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"Expected auto or {self.expected}. Received: {x!r}") from None

    def serialize(self, x: Any) -> str:
        return str(x)


class BatchSizeParameter(_AutoOrNumberParameter):
    """`auto` (config.AUTO_BATCH_SIZE, at most the training split) or a number of examples."""

    expected = "an integer"

    def number(self, x: Any) -> Any:
        if float(x) != int(float(x)):
            raise ValueError
        return int(float(x)) if isinstance(x, str) else int(x)


class AutoFloatParameter(_AutoOrNumberParameter):
    """`auto` (resolved by config.resolve for the shards) or a number."""


class AugmentParameter(luigi.Parameter[Any]):
    """`auto` (the problem's default), or a JSON list of augmentation names: `["flip_horizontal", "shift"]`, `[]`."""

    def parse(self, x: str) -> Any:
        if x.strip() == "auto":
            return "auto"
        try:
            value = json.loads(x)
        except ValueError:
            value = None
        return self.normalize(value if value is not None else x)

    def normalize(self, x: Any) -> Any:
        if x == "auto":
            return "auto"
        if not isinstance(x, (list, tuple)) or not all(isinstance(name, str) for name in x):
            example = '["flip_horizontal", "shift", "brightness"]'
            raise ValueError(f"Expected auto or a JSON list of augmentation names like {example}. Received: {x!r}")
        return tuple(x)

    def serialize(self, x: Any) -> str:
        return "auto" if x == "auto" else json.dumps(list(x))
