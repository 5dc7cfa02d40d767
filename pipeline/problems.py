"""The problem a dataset poses: regression or classification, as objects behind one protocol.

Every consumer asks the problem instead of re-deriving it from the data: the
shards' manifest records its name (`manifest["problem"]`), `get(name)` returns
the object, and the object knows

- its default network (by the shape of the inputs) and default augmentation;
- how a network's output looks (`output_activation`, `num_outputs`) and how to
  check that a user's network fits;
- its loss and its streaming Keras metrics (training and periodic evaluation).

What only the later stages need stays with them, so that a change there does not
retrain: the whole-split report and its headline numbers are in
`evaluation/scoring.py`, the figures that show a problem in `evaluation/figures.py`.

Standard library at import (Luigi's scheduling path resolves `auto` with it);
Keras and NumPy are imported inside the methods that train or evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import keras

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
    # The defaults a training is compiled with (training/compiling.py: any can be overridden):
    default_loss: ClassVar[str]  # `--TrainEstimator-loss auto`, as Keras names it
    metric_names: ClassVar[tuple[str, ...]]  # the names of `metrics()`, always computed
    label_shape: ClassVar[tuple[int, ...]]  # one example's label as the shards hold it

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


class Regression(Problem):
    """Predict one number per example; mean squared error."""

    name = "regression"
    output_activation = "linear"
    default_loss = "mse"
    metric_names = ("mse", "rmse", "mae")
    label_shape = (1,)

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


class Classification(Problem):
    """Predict one of `class_names` per example; the network outputs class probabilities (softmax)."""

    name = "classification"
    output_activation = "softmax"
    default_loss = "sparse_categorical_crossentropy"
    metric_names = ("accuracy",)
    label_shape = ()

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


PROBLEMS: dict[str, Problem] = {problem.name: problem for problem in (Regression(), Classification())}


def get(name: str) -> Problem:
    """The problem called `name` (as the manifest records it)."""
    if name not in PROBLEMS:
        raise ValueError(f"Unknown problem. Expected one of {sorted(PROBLEMS)}. Received: problem={name!r}")
    return PROBLEMS[name]
