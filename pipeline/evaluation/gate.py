"""The quality gate: EvaluateEstimator's verdict on a model, blessed or not, and why (TFX's "blessing").

A requirement names a number of the evaluation report, `<split>.<name>`
(`validation.accuracy`, `validation.mse`, `validation.macro_f1`,
`validation.macro_avg.recall`), and a bound. A bare number's direction follows
the metric: loss-like metrics (`LOWER_IS_BETTER`: mse, mae, loss, ...error,
...crossentropy) must stay at most the bound, every other metric at least it;
`{"at_most": x}` or `{"at_least": x}` says it outright (a metric of your own).
A baseline (another run's evaluation, found by the task) is checked on the
same metrics, or on the problem's first headline metric when none is
required: the model may be worse by at most `max_regression` (absolute).

With nothing to check the verdict says so ("no thresholds set"): it blesses,
since nothing failed, and says that nothing was checked. Pure Python on the
report's JSON: no TensorFlow, nothing read or written here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipeline.core.values import flatten
from pipeline.evaluation.scoring import of as scoring_of

VERDICT = "verdict"  # the key of metrics.json that holds it
BLESSED, NOT_BLESSED, UNCHECKED = "blessed", "not blessed", "no thresholds set"
AT_LEAST, AT_MOST = "at_least", "at_most"
SPLITS = ("validation", "train")
# Metrics where lower is better: by name, or by the end of the name (Keras' `mean_squared_error`).
LOWER_IS_BETTER = {"mse", "rmse", "mae", "mape", "msle", "loss", "logcosh", "hinge", "poisson", "kld"}
LOWER_IS_BETTER_ENDINGS = ("_loss", "error", "crossentropy", "hinge", "divergence")


def direction(metric: str) -> str:
    """AT_MOST for a loss-like metric (its last dotted part names one), AT_LEAST for any other."""
    name = metric.rsplit(".", 1)[-1].lower()
    lower = name in LOWER_IS_BETTER or name.endswith(LOWER_IS_BETTER_ENDINGS)
    return AT_MOST if lower else AT_LEAST


def parse_requirements(require: Mapping[str, Any]) -> dict[str, tuple[str, float]]:
    """`--EvaluateEstimator-require` as {metric: (direction, bound)}; ValueError naming a malformed entry."""
    parsed = {}
    for metric, given in require.items():
        split = str(metric).split(".", 1)[0]
        if split not in SPLITS or "." not in str(metric):
            raise ValueError(
                "--EvaluateEstimator-require names a metric as <split>.<name> with split validation or train, "
                f'e.g. {{"validation.accuracy": 0.95}}. Received: {metric!r}'
            )
        if isinstance(given, Mapping) and len(given) == 1 and next(iter(given)) in (AT_LEAST, AT_MOST):
            way, bound = next(iter(given.items()))
        else:
            way, bound = direction(str(metric)), given
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise ValueError(
                f"--EvaluateEstimator-require: {metric}'s bound must be a finite number, or "
                f'{{"at_least": x}} / {{"at_most": x}}. Received: {given!r}'
            )
        parsed[str(metric)] = (way, float(bound))
    return parsed


def numbers(report: Mapping[str, Any]) -> dict[str, float]:
    """Every number a requirement may name in an evaluation report: `validation.mse`, `validation.macro_f1`
    (the headline names), `validation.macro_avg.f1`, ... (counts and per-example lists left out)."""
    found: dict[str, float] = {}
    scoring = scoring_of(str(report["problem"]))
    for split in SPLITS:
        section = report.get(split)
        if not isinstance(section, Mapping):
            continue
        for name, value in flatten(section).items():
            if isinstance(value, float):
                found[f"{split}.{name}"] = value
        found.update({f"{split}.{name}": value for name, value in scoring.headline(section).items()})
    return found


def _check(metric: str, value: float, way: str, bound: float, against: str) -> dict[str, Any]:
    passed = value >= bound if way == AT_LEAST else value <= bound
    sign = (">=" if way == AT_LEAST else "<=") if passed else ("<" if way == AT_LEAST else ">")
    return {
        "metric": metric,
        "value": value,
        "direction": way,
        "bound": bound,
        "against": against,
        "passed": passed,
        "text": f"{metric} {value:.4g} {sign} {bound:.4g} ({against})",
    }


def compared_metrics(report: Mapping[str, Any], require: Mapping[str, Any]) -> list[str]:
    """The metrics a baseline is compared on: the required ones, else the problem's first headline metric."""
    return list(parse_requirements(require)) or [f"validation.{scoring_of(str(report['problem'])).headline_metrics[0]}"]


def verdict(
    report: Mapping[str, Any],
    require: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
    max_regression: float = 0.0,
) -> dict[str, Any]:
    """The verdict on the model of `report` (evaluate.evaluate's): each check, its status and a one-line summary.

    `baseline`: {"run": ..., "report": the baseline's report, ...} (what describes it is recorded beside the
    checks), {"given": ..., "none": why} when no baseline was found, or None when none is asked for.
    A required metric the report does not have raises ValueError listing those it has.
    """
    available = numbers(report)
    requirements = parse_requirements(require)
    checks = []
    for metric, (way, bound) in requirements.items():
        if metric not in available:
            raise ValueError(
                f"--EvaluateEstimator-require names {metric}, which this evaluation does not report; it reports: "
                f"{', '.join(sorted(available))}."
            )
        checks.append(_check(metric, available[metric], way, bound, "required"))
    recorded = None
    if baseline is not None:
        recorded = {key: value for key, value in baseline.items() if key != "report"}
        if "report" in baseline:
            theirs = numbers(baseline["report"])
            recorded["values"] = {}
            for metric in compared_metrics(report, require):
                if metric not in available or metric not in theirs:
                    continue
                way = requirements.get(metric, (direction(metric), 0.0))[0]
                allowed = theirs[metric] - max_regression if way == AT_LEAST else theirs[metric] + max_regression
                recorded["values"][metric] = theirs[metric]
                checks.append(_check(metric, available[metric], way, allowed, f"baseline {baseline.get('run')}"))
    failed = [check["text"] for check in checks if not check["passed"]]
    if not checks:
        status = UNCHECKED
        why = (recorded or {}).get("none", "")
        summary = (
            f"{UNCHECKED}: nothing was checked{f' ({why})' if why else ''}; set --EvaluateEstimator-require "
            "or --EvaluateEstimator-baseline to gate the export"
        )
    elif failed:
        status, summary = NOT_BLESSED, f"{NOT_BLESSED}: " + "; ".join(failed)
    else:
        status, summary = BLESSED, f"{BLESSED}: " + "; ".join(check["text"] for check in checks)
    return {
        "status": status,
        "blessed": not failed,
        "summary": summary,
        "checks": checks,
        "failed": failed,
        "baseline": recorded,
        "max_regression": max_regression if baseline is not None else None,
    }
