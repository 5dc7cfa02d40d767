"""Preprocessing inside the model: a table's raw columns to the numbers a network takes (imports Keras).

The exported model takes what a client has: one input per column, a number
(NaN when missing) or a string as it appears in the table. In front of the
network, built from the manifest's schema (the train split's statistics and
vocabularies, `etl/columns.py`: nothing is fitted here):

- a numeric column is imputed with its train mean where it is missing (NaN),
  standardised, and followed by a missing indicator when the train split had
  missing values (`ImputeAndScale`);
- a categorical column is looked up in its train vocabulary and one-hot
  encoded with one out-of-vocabulary slot, for a category the train split
  never had (Keras' `StringLookup`); a missing value is the category "", a
  slot of its own when the train split had missing values.

A regression's network predicts the label standardised by its train mean and
standard deviation, and a last `Rescaling` layer gives it back in the label's
units (a body mass in grams starts near its mean, not near 0).

Keras' `FeatureSpace` is the model for this; it fits its statistics itself
(`adapt`) and has no imputation, hence `ImputeAndScale` beside Keras' lookup.
"""

from __future__ import annotations

import logging
from typing import Any

import keras

logger = logging.getLogger("luigi-interface")  # Luigi prints this logger in its run log


@keras.saving.register_keras_serializable(package="pipeline")
class ImputeAndScale(keras.layers.Layer):
    """(x - mean) / std, a missing value (NaN) taken as the mean; then its missing indicator, if asked.

    Input [batch] or [batch, n] numbers; output [batch, n] float32, or [batch, 2n] with the
    indicators (1.0 where missing) after the values.
    """

    def __init__(self, mean: float, variance: float, indicator: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean, self.variance, self.indicator = float(mean), float(variance), bool(indicator)

    def call(self, x: Any) -> Any:
        x = keras.ops.cast(x, "float32")
        if len(x.shape) == 1:
            x = keras.ops.expand_dims(x, -1)
        missing = keras.ops.isnan(x)
        std = max(self.variance, 1e-12) ** 0.5  # a constant train column scales to 0, not to NaN
        scaled = keras.ops.where(missing, keras.ops.zeros_like(x), (x - self.mean) / std)
        if not self.indicator:
            return scaled
        return keras.ops.concatenate([scaled, keras.ops.cast(missing, "float32")], axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        width = 1 if len(input_shape) == 1 else input_shape[-1]
        return (input_shape[0], None if width is None else width * (2 if self.indicator else 1))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean, "variance": self.variance, "indicator": self.indicator}


def raw_inputs(manifest: dict[str, Any]) -> dict[str, Any]:
    """One `keras.Input` per named input of the manifest, as the shards hold it (strings as strings)."""
    features = manifest["features"]
    return {
        name: keras.Input(shape=tuple(features[name]["shape"]), dtype=features[name]["dtype"], name=name)
        for name in manifest["inputs"]
    }


def encode(manifest: dict[str, Any], inputs: dict[str, Any]) -> Any:
    """The named inputs as one [batch, width] float32 tensor: columns imputed, scaled, looked up."""
    parts = []
    for name, tensor in inputs.items():
        column = manifest["columns"][name]
        if column["kind"] == "categorical":
            vocabulary = [value for value, _ in column["vocabulary"]]
            lookup = keras.layers.StringLookup(
                vocabulary=vocabulary, num_oov_indices=1, output_mode="one_hot", name=f"{name}_lookup"
            )
            parts.append(lookup(tensor))
        elif column["kind"] == "numeric":
            if len(tensor.shape) > 2:  # an array of the user's: flattened
                tensor = keras.layers.Reshape((-1,), name=f"{name}_flat")(tensor)
            scale = ImputeAndScale(column["mean"], column["variance"], column["missing"] > 0, name=f"{name}_scaled")
            parts.append(scale(tensor))
        else:  # strings of a source of the user's (an id, a text): a network of their own takes them
            logger.warning(
                "TrainEstimator: the input %r holds strings, which the built-in networks do not use. A network of "
                "your own that takes input_spec gets it (docs/your-experiment.md).",
                name,
            )
    if not parts:
        raise ValueError(
            "No input is numbers or a table's categories: the built-in networks have nothing to take. Use a "
            "network of your own that takes input_spec (docs/your-experiment.md)."
        )
    return parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="encoded")(parts)


def with_preprocessing(network: keras.Model, manifest: dict[str, Any]) -> keras.Model:
    """`network`, which takes the encoded [batch, width] vector, behind the preprocessing of the raw inputs."""
    inputs = raw_inputs(manifest)
    outputs = network(encode(manifest, inputs))
    if "label_statistics" in manifest:  # regression: the network predicts standardised labels
        stats = manifest["label_statistics"]
        std = max(stats["variance"], 1e-12) ** 0.5
        outputs = keras.layers.Rescaling(std, offset=stats["mean"], name="label_units", dtype="float32")(outputs)
    return keras.Model(inputs, outputs, name=network.name)
