"""The problem a dataset poses: regression or classification, as objects behind one protocol.

Every consumer asks the problem instead of re-deriving it from the data: the
shards' manifest records its name (`manifest["problem"]`), `get(name)` returns
the object, and the object knows

- its default network (by the shape of the inputs) and default augmentation;
- how a network's output looks (`output_activation`, `num_outputs`) and how to
  check that a user's network fits;
- its loss and its streaming Keras metrics (training and periodic evaluation);
- its evaluation report over a whole split, and the headline numbers of it;
- which figures show it (drawn by `plots.py`, by name), and what its training curves show.

Standard library at import (Luigi's scheduling path resolves `auto` with it);
Keras and NumPy are imported inside the methods that train or evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import keras
    import numpy as np

# Augmentations by name, applied to training batches of images only (inputs.apply_augmentations).
# Flipping teaches a model that a mirrored input has the same label: wrong for
# digits, letters, text or left/right classes.
AUGMENTATIONS = ("flip_horizontal", "flip_vertical", "shift", "brightness")


def input_kind(input_shape: Sequence[int]) -> str:
    """ "image" for [height, width, channels] inputs, "vector" for [features]."""
    return "image" if len(input_shape) == 3 else "vector"


class Problem:
    """What every problem answers. Subclasses set the class attributes and the methods below."""

    name: ClassVar[str]
    output_activation: ClassVar[str]  # what the last layer of a network must end in
    headline_metrics: ClassVar[tuple[str, ...]]  # the report's numbers a table of runs shows
    loss_name: ClassVar[str]  # what the loss is, in words (the training curves' loss panel)
    curve_metric: ClassVar[str | None] = None  # a metric drawn beside the loss in the training curves, if any

    def default_network(self, input_shape: Sequence[int]) -> str:
        """The built-in network `--TrainEstimator-network auto` picks: a CNN for images, else the MLP."""
        return "cnn" if input_kind(input_shape) == "image" else "mlp"

    def default_augment(self, input_shape: Sequence[int]) -> tuple[str, ...]:
        """The augmentations `--TrainEstimator-augment auto` picks (none for vectors)."""
        return ()

    def num_outputs(self, class_names: Sequence[str]) -> int:
        raise NotImplementedError

    def check_outputs(self, outputs: Any, num_outputs: int) -> str | None:
        """Why a network's outputs (a NumPy array [batch, ...] on a sample input) do not fit, or None."""
        shape = tuple(outputs.shape[1:])
        if shape != (num_outputs,):
            return f"its output has shape {shape} per example, the {self.name} needs ({num_outputs},)"
        return None

    # --- training (Keras) ---

    def loss(self) -> keras.losses.Loss:
        raise NotImplementedError

    def metrics(self) -> list[keras.metrics.Metric]:
        """Streaming metrics Keras computes at every evaluation (exact over a whole finite dataset)."""
        raise NotImplementedError

    def per_example(self, labels: Any, outputs: Any) -> dict[str, Any]:
        """Per-example loss and metric terms (tensors [batch]) whose means are the metrics (multi-host loop)."""
        raise NotImplementedError

    def finish(self, means: dict[str, float]) -> dict[str, float]:
        """The metrics from the means of `per_example`'s terms."""
        return means

    # --- evaluation and figures ---

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

    def figures(self, input_shape: Sequence[int]) -> tuple[str, ...]:
        """Names of the figures PlotInference draws for this problem (plots.FIGURES)."""
        raise NotImplementedError


def _dig(report: Mapping[str, Any], name: str) -> Any:
    """report["macro_avg"]["f1"] for "macro_f1"; report[name] otherwise."""
    if name.startswith("macro_"):
        return report["macro_avg"][name.removeprefix("macro_")]
    return report[name]


class Regression(Problem):
    """Predict one number per example; mean squared error."""

    name = "regression"
    output_activation = "linear"
    headline_metrics = ("mse", "rmse", "mae")
    loss_name = "mean squared error"

    def num_outputs(self, class_names: Sequence[str]) -> int:
        return 1

    def loss(self) -> keras.losses.Loss:
        import keras

        return keras.losses.MeanSquaredError(name="mse")

    def metrics(self) -> list[keras.metrics.Metric]:
        import keras

        return [
            keras.metrics.MeanSquaredError(name="mse"),
            keras.metrics.RootMeanSquaredError(name="rmse"),
            keras.metrics.MeanAbsoluteError(name="mae"),
        ]

    def per_example(self, labels: Any, outputs: Any) -> dict[str, Any]:
        import tensorflow as tf

        error = tf.cast(tf.reshape(labels, tf.shape(outputs)), tf.float32) - outputs
        squared = tf.reduce_mean(tf.square(error), axis=-1)
        return {"loss": squared, "mse": squared, "mae": tf.reduce_mean(tf.abs(error), axis=-1)}

    def finish(self, means: dict[str, float]) -> dict[str, float]:
        return {**means, "rmse": math.sqrt(means["mse"])}

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

    def figures(self, input_shape: Sequence[int]) -> tuple[str, ...]:
        # One input feature: the predictions against it (the seed's figure) as well.
        along_input = ("predictions",) if tuple(input_shape) == (1,) else ()
        return (*along_input, "predicted_vs_true", "curves")


class Classification(Problem):
    """Predict one of `class_names` per example; the network outputs class probabilities (softmax)."""

    name = "classification"
    output_activation = "softmax"
    headline_metrics = ("accuracy", "macro_f1")
    loss_name = "cross-entropy"
    curve_metric = "accuracy"

    def default_augment(self, input_shape: Sequence[int]) -> tuple[str, ...]:
        return ("flip_horizontal", "shift", "brightness") if input_kind(input_shape) == "image" else ()

    def num_outputs(self, class_names: Sequence[str]) -> int:
        return len(class_names)

    def check_outputs(self, outputs: Any, num_outputs: int) -> str | None:
        wrong = super().check_outputs(outputs, num_outputs)
        if wrong:
            return wrong
        sums = outputs.sum(axis=-1)
        if outputs.min() < -1e-6 or abs(sums - 1).max() > 1e-3:
            return "its outputs are not class probabilities (they must sum to 1): end it with a softmax"
        return None

    def loss(self) -> keras.losses.Loss:
        import keras

        return keras.losses.SparseCategoricalCrossentropy(name="sparse_categorical_crossentropy")

    def metrics(self) -> list[keras.metrics.Metric]:
        import keras

        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def per_example(self, labels: Any, outputs: Any) -> dict[str, Any]:
        import keras
        import tensorflow as tf

        hits = tf.cast(tf.equal(tf.argmax(outputs, axis=-1), tf.cast(tf.reshape(labels, [-1]), tf.int64)), tf.float32)
        return {"loss": keras.losses.sparse_categorical_crossentropy(labels, outputs), "accuracy": hits}

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

        from pipeline import metrics

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

    def figures(self, input_shape: Sequence[int]) -> tuple[str, ...]:
        images = ("validation_images",) if input_kind(input_shape) == "image" else ()
        return ("confusion_matrix", *images, "curves")


PROBLEMS: dict[str, Problem] = {problem.name: problem for problem in (Regression(), Classification())}


def get(name: str) -> Problem:
    """The problem called `name` (as the manifest records it)."""
    if name not in PROBLEMS:
        raise ValueError(f"Unknown problem. Expected one of {sorted(PROBLEMS)}. Received: problem={name!r}")
    return PROBLEMS[name]
