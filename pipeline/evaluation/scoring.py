"""A problem's evaluation report over a whole split, and its headline numbers (EvaluateEstimator).

Beside the problem objects (problems.py) rather than in them: only the evaluation
and the commands that show its results read this, so a change here reruns the
evaluation and what follows it, never the training. `of(problem)` gives the
scoring of a problem; NumPy is imported inside the methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

    from pipeline.problems import Problem


class Scoring:
    """What every problem's evaluation answers."""

    problem: ClassVar[str]  # problems.Problem.name
    headline_metrics: ClassVar[tuple[str, ...]]  # the report's numbers a table of runs shows

    def report(
        self,
        labels: np.ndarray,
        predictions: np.ndarray,
        class_names: Sequence[str],
        ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The evaluation report of one whole split, as JSON-ready data; `ids` name the examples."""
        raise NotImplementedError

    def headline(self, report: Mapping[str, Any]) -> dict[str, float]:
        """The report's headline numbers, e.g. {"mse": 0.0109} or {"accuracy": 0.99, "macro_f1": 0.99}."""
        return {name: float(_dig(report, name)) for name in self.headline_metrics}


def _dig(report: Mapping[str, Any], name: str) -> Any:
    """report["macro_avg"]["f1"] for "macro_f1"; report[name] otherwise."""
    if name.startswith("macro_"):
        return report["macro_avg"][name.removeprefix("macro_")]
    return report[name]


class RegressionScoring(Scoring):
    """Mean squared error, its root and the mean absolute error over the split."""

    problem = "regression"
    headline_metrics = ("mse", "rmse", "mae")

    def report(
        self,
        labels: np.ndarray,
        predictions: np.ndarray,
        class_names: Sequence[str],
        ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        import numpy as np

        error = np.ravel(predictions).astype(np.float64) - np.ravel(labels).astype(np.float64)
        mse = float(np.mean(error**2))
        return {"num_examples": int(error.size), "mse": mse, "rmse": math.sqrt(mse), "mae": float(np.mean(abs(error)))}


class ClassificationScoring(Scoring):
    """Accuracy, precision / recall / F1 per class and macro, the confusion matrix, the mistakes."""

    problem = "classification"
    headline_metrics = ("accuracy", "macro_f1")

    def report(
        self,
        labels: np.ndarray,
        predictions: np.ndarray,
        class_names: Sequence[str],
        ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Accuracy, per-class and macro precision / recall / F1, the confusion matrix, and every
        misclassified example (by its id: an image's file, a table's line) with its true and predicted class."""
        import numpy as np

        from pipeline.evaluation import metrics

        predicted = np.argmax(predictions, axis=-1)
        report = metrics.classification_report(labels, predicted, class_names)
        if ids is not None:
            report["misclassified"] = [
                {
                    "example": ids[i],
                    "true": class_names[int(labels[i])],
                    "predicted": class_names[int(predicted[i])],
                    "probability": round(float(predictions[i, predicted[i]]), 4),
                }
                for i in np.flatnonzero(predicted != np.ravel(labels)).tolist()
            ]
        return report


SCORINGS: dict[str, Scoring] = {scoring.problem: scoring for scoring in (RegressionScoring(), ClassificationScoring())}


def of(problem: Problem | str) -> Scoring:
    """The scoring of `problem` (a problems.Problem, or its name as the manifest records it)."""
    name = problem if isinstance(problem, str) else problem.name
    if name not in SCORINGS:
        raise ValueError(f"Unknown problem. Expected one of {sorted(SCORINGS)}. Received: problem={name!r}")
    return SCORINGS[name]
