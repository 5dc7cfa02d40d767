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


def build_mlp(spec: NetworkSpec) -> keras.Model:
    """Dense ReLU layers of `hidden_units`, then a linear output (the seed's network)."""
    inputs = keras.Input(shape=spec.input_shape, name="x")
    h = inputs
    for i, units in enumerate(spec.hidden_units):
        h = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(h)
    outputs = keras.layers.Dense(1, name="y")(h)
    return keras.Model(inputs, outputs, name="mlp")


NETWORKS: dict[str, Callable[[NetworkSpec], keras.Model]] = {"mlp": build_mlp}


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
    model.compile(
        optimizer=keras.optimizers.Adam(rate, name="adam"),  # named: checkpoints byte-identical across runs
        loss="mse",
        metrics=regression_metrics(),
        steps_per_execution=spec.steps_per_execution,
    )
    return model
