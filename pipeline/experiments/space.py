"""A search space from the command line: `--Task-param 'loguniform(1e-4, 1e-1)'`.

Four distributions, as Optuna has them:

- `uniform(low, high)`: a real number in [low, high];
- `loguniform(low, high)`: a real number in [low, high], uniform in its logarithm (0 < low);
- `int(low, high)`: a whole number in [low, high] (`int(low, high, step)` every step-th one);
- `choice(a, b, ...)`: one of the values listed, each written as on the command line
  (`choice([64], [100, 100])`, `choice(0.01, 0.003)`; commas inside brackets stay).

Every value a trial takes goes through the parameter's own parsing, as a value on the
command line does, so a trial never gets what `luigi --module pipeline` would refuse.
Optuna's distributions are made on demand (`Dimension.distribution()`): importing this
module imports no Optuna.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import luigi

from pipeline.core import values
from pipeline.errors import ParameterError
from pipeline.experiments.sweep import split_top_level

KINDS = ("uniform", "loguniform", "int", "choice")
SPELLINGS = "uniform(low, high), loguniform(low, high), int(low, high) or choice(a, b, ...)"
_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: its stage and name, its distribution and the bounds or choices."""

    family: str
    name: str
    flag: str
    kind: str  # one of KINDS
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    choices: tuple[str, ...] = ()  # choice: the values as canonical JSON (Optuna's categories)

    @property
    def label(self) -> str:
        """The name the study, the tables and the figures use: `TrainEstimator.learning_rate`."""
        return f"{self.family}.{self.name}"

    def spelling(self) -> str:
        """The distribution as the command line writes it (what the study records)."""
        if self.kind == "choice":
            return f"choice({', '.join(self.choices)})"
        if self.kind == "int":
            step = f", {self.step}" if self.step != 1 else ""
            return f"int({int(self.low)}, {int(self.high)}{step})"
        return f"{self.kind}({self.low:g}, {self.high:g})"

    def distribution(self) -> Any:
        """The Optuna distribution (imports Optuna)."""
        from optuna import distributions

        if self.kind == "choice":
            return distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return distributions.IntDistribution(int(self.low), int(self.high), step=self.step)
        return distributions.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def value(self, sampled: Any) -> Any:
        """The parameter value of what Optuna sampled, as the parameter parses it (plain JSON data)."""
        text = sampled if self.kind == "choice" else repr(sampled)
        return values.normalise(_parse(self._param(), self.flag, _unquoted(text)))

    def holds(self, value: Any) -> Any | None:
        """The study's value for a parameter value of a finished run, or None when it is outside the space."""
        if self.kind == "choice":
            text = _canonical(value)
            return text if text in self.choices else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not self.low <= value <= self.high:
            return None
        if self.kind == "int":
            whole = int(value)
            return whole if whole == value and (whole - int(self.low)) % self.step == 0 else None
        return float(value)

    def _param(self) -> luigi.Parameter:
        return dict(luigi.task_register.Register.get_task_cls(self.family).get_params())[self.name]


def is_distribution(text: str) -> bool:
    """Whether a flag's value is written as a distribution (`name(...)`) rather than as one value.

    JSON and Python values never look like a call, so `[64]` or `{"width": 8}` stay values.
    """
    return bool(_CALL.match(text))


def parse(family: str, name: str, flag: str, param: luigi.Parameter, text: str) -> Dimension:
    """The dimension `text` describes for the parameter `param` (`flag` names it in messages).

    Raises ParameterError, one line naming the flag: an unknown distribution, bounds that are
    not numbers, an inverted or empty range, a bound or choice the parameter does not accept.
    """
    match = _CALL.match(text)
    if not match:
        raise ParameterError(f"{flag}: {text!r} is not a distribution. Expected {SPELLINGS}.")
    kind, inside = match[1], match[2]
    if kind not in KINDS:
        raise ParameterError(f"{flag}: unknown distribution {kind}. Expected {SPELLINGS}. Received: {text!r}")
    arguments = [part for part in split_top_level(inside) if part] if inside.strip() else []
    if kind == "choice":
        if len(arguments) < 2:
            raise ParameterError(f"{flag}: choice needs at least two values, e.g. choice(a, b). Received: {text!r}")
        choices = [_canonical(_parse(param, flag, _unquoted(part))) for part in arguments]
        if len(set(choices)) < len(choices):
            raise ParameterError(f"{flag}: choice lists a value twice. Received: {text!r}")
        return Dimension(family, name, flag, kind, choices=tuple(choices))
    expected = 3 if kind == "int" else 2
    if not 2 <= len(arguments) <= expected:
        spelled = "int(low, high) or int(low, high, step)" if kind == "int" else f"{kind}(low, high)"
        raise ParameterError(f"{flag}: {kind} takes {spelled}. Received: {text!r}")
    numbers = [_number(flag, part, whole=kind == "int") for part in arguments]
    low, high = numbers[0], numbers[1]
    step = int(numbers[2]) if len(numbers) == 3 else 1
    if not low < high:
        raise ParameterError(f"{flag}: the range of {text.strip()} is inverted or empty: low must be below high.")
    if kind == "loguniform" and low <= 0:
        raise ParameterError(f"{flag}: loguniform needs 0 < low (it samples the logarithm). Received: {text!r}")
    if step < 1:
        raise ParameterError(f"{flag}: the step of int must be at least 1. Received: {text!r}")
    for bound in (low, high):  # the parameter takes the bounds, so it takes what lies between them
        if kind == "int":
            _parse(param, flag, str(int(bound)))
        elif (taken := _number_kind(param, bound)) != "real":
            other = "whole numbers: search it with int(low, high)" if taken == "whole" else "no numbers"
            raise ParameterError(f"{flag} takes {other}. Received: {text!r}")
    return Dimension(family, name, flag, kind, float(low), float(high), step)


def _number_kind(param: luigi.Parameter, number: float) -> str:
    """How the parameter takes `number`: "real", "whole" (as an integer only) or "none"."""
    try:
        parsed = param.normalize(param.parse(repr(float(number))))
        if isinstance(parsed, float) and parsed == float(number):
            return "real"
    except (ValueError, TypeError):
        pass
    try:
        whole = param.normalize(param.parse(str(int(number))))
    except (ValueError, TypeError):
        return "none"
    return "whole" if isinstance(whole, int) and not isinstance(whole, bool) else "none"


def _number(flag: str, text: str, whole: bool) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ParameterError(f"{flag}: the bounds of a distribution are numbers. Received: {text!r}") from None
    if not math.isfinite(number) or (whole and number != int(number)):
        kind = "whole numbers" if whole else "finite numbers"
        raise ParameterError(f"{flag}: the bounds of int are {kind}. Received: {text!r}")
    return number


def _parse(param: luigi.Parameter, flag: str, text: str) -> Any:
    try:
        return param.normalize(param.parse(text))
    except (ValueError, TypeError) as error:
        raise ParameterError(f"{flag} value {text!r} is not accepted: {error}") from None


def _unquoted(text: str) -> str:
    """A choice written as a quoted string (`choice("a,b", c)`) is the string inside the quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _canonical(value: Any) -> str:
    """A parameter value as one category: strings as they are, anything else as JSON (`[100, 100]`)."""
    plain = values.normalise(value)
    return plain if isinstance(plain, str) else json.dumps(plain)
