"""Classification metrics from predicted labels (NumPy only).

Computed from the predictions over a whole split, not streamed per batch:
accuracy, precision / recall / F1 per class and their unweighted (macro)
means, and the confusion matrix. A ratio whose denominator is 0 (a class
never predicted, or absent) is 0, as scikit-learn's `zero_division=0`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [num_classes, num_classes]: row = true class, column = predicted class."""
    labels, predicted = np.asarray(labels, dtype=np.int64).ravel(), np.asarray(predicted, dtype=np.int64).ravel()
    if labels.shape != predicted.shape:
        raise ValueError(f"labels and predictions differ in length: {labels.shape[0]} vs {predicted.shape[0]}.")
    for name, values in (("labels", labels), ("predictions", predicted)):
        if values.size and not 0 <= values.min() <= values.max() < num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}). Received: {values.min()}..{values.max()}")
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def classification_report(labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class and macro precision / recall / F1, and the confusion matrix, as JSON-ready data."""
    matrix = confusion_matrix(labels, predicted, len(class_names))
    true_positives = np.diag(matrix)
    support, predicted_count = matrix.sum(axis=1), matrix.sum(axis=0)
    per_class = {}
    for k, name in enumerate(class_names):
        precision = _ratio(true_positives[k], predicted_count[k])
        recall = _ratio(true_positives[k], support[k])
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": int(support[k]),
        }
    return {
        "num_examples": int(matrix.sum()),
        "accuracy": _ratio(true_positives.sum(), matrix.sum()),
        "per_class": per_class,
        "macro_avg": {m: float(np.mean([c[m] for c in per_class.values()])) for m in ("precision", "recall", "f1")},
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class (order of class_names)",
    }
