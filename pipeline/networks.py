"""Networks by name: the `model_fn` of this pipeline (imports Keras).

`build_model(spec)` returns a compiled `keras.Model`; TRAIN, EVAL and PREDICT
are `fit`, `evaluate` and `predict` on that same model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class NetworkSpec:
    """What a network builder needs: its name, sizes and optimiser settings."""

    name: str
    task: str  # "regression" (the sine) or "classification"
    input_shape: tuple[int, ...]
    hidden_units: tuple[int, ...]
    learning_rate: float
    lr_decay_steps: int  # cosine decay to 0 over this many steps; 0 keeps the rate constant
    steps_per_execution: int = 1
    num_classes: int = 0
    conv_filters: tuple[int, ...] = ()  # cnn: filters of each convolution block
    dense_units: int = 0  # cnn: units of the dense layer before the classifier


def build_mlp(spec: NetworkSpec) -> keras.Model:
    """Dense ReLU layers of `hidden_units`, then a linear output (the seed's network)."""
    inputs = keras.Input(shape=spec.input_shape, name="x")
    h = inputs
    for i, units in enumerate(spec.hidden_units):
        h = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(h)
    outputs = keras.layers.Dense(1, name="y", dtype="float32")(h)  # float32 output under mixed precision
    return keras.Model(inputs, outputs, name="mlp")


def build_cnn(spec: NetworkSpec) -> keras.Model:
    """A small convolutional classifier of images in [0, 1].

    One block per entry of `conv_filters`: 3x3 convolution, batch
    normalisation, ReLU, 2x2 max pooling (each block halves height and
    width). Then global average pooling, a dense ReLU layer of `dense_units`
    and a softmax over `num_classes`: the model outputs class probabilities.
    """
    if spec.num_classes < 2:
        raise ValueError(f"The cnn classifies into at least 2 classes. Received: num_classes={spec.num_classes}")
    inputs = keras.Input(shape=spec.input_shape, name="image")
    h = inputs
    for i, filters in enumerate(spec.conv_filters):
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv_{i}")(h)
        h = keras.layers.BatchNormalization(momentum=0.9, name=f"batch_norm_{i}")(h)
        h = keras.layers.ReLU(name=f"relu_{i}")(h)
        h = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(h)
    h = keras.layers.GlobalAveragePooling2D(name="global_pool")(h)
    h = keras.layers.Dense(spec.dense_units, activation="relu", name="dense")(h)
    outputs = keras.layers.Dense(spec.num_classes, activation="softmax", name="probabilities", dtype="float32")(h)
    return keras.Model(inputs, outputs, name="cnn")


NETWORKS: dict[str, Callable[[NetworkSpec], keras.Model]] = {"mlp": build_mlp, "cnn": build_cnn}


def classification_metrics() -> list[keras.metrics.Metric]:
    """Streaming accuracy of integer labels against predicted class probabilities."""
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def regression_metrics() -> list[keras.metrics.Metric]:
    """Streaming metrics for regression, exact over a whole finite dataset."""
    return [
        keras.metrics.MeanSquaredError(name="mse"),
        keras.metrics.RootMeanSquaredError(name="rmse"),
        keras.metrics.MeanAbsoluteError(name="mae"),
    ]


def build_model(spec: NetworkSpec) -> keras.Model:
    """Build the network `spec.name` and compile it with Adam and the task's loss."""
    if spec.name not in NETWORKS:
        raise ValueError(f"Unknown network. Expected one of {sorted(NETWORKS)}. Received: network={spec.name!r}")
    model = NETWORKS[spec.name](spec)
    rate: float | keras.optimizers.schedules.LearningRateSchedule = spec.learning_rate
    if spec.lr_decay_steps > 0:
        rate = keras.optimizers.schedules.CosineDecay(spec.learning_rate, spec.lr_decay_steps)
    classification = spec.task == "classification"
    model.compile(
        optimizer=keras.optimizers.Adam(rate, name="adam"),  # named: checkpoints byte-identical across runs
        loss="sparse_categorical_crossentropy" if classification else "mse",
        metrics=classification_metrics() if classification else regression_metrics(),
        steps_per_execution=spec.steps_per_execution,
    )
    return model
