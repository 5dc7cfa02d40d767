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

- image bytes (a PNG or JPEG string of a source of the user's or of TFRecords,
  `"encoding": "image"` in the manifest) are decoded to float32 in [0, 1] of the
  recorded shape (`DecodeImages`): the built-in cnn takes the image, the numbers
  beside it enter after its pooling (networks.build_cnn's `num_features`).

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
import numpy as np

logger = logging.getLogger("luigi-interface")  # Luigi prints this logger in its run log


@keras.saving.register_keras_serializable(package="pipeline")
class ImputeAndScale(keras.layers.Layer):
    """(x - mean) / std, a missing value (NaN) taken as the mean; then its missing indicator, if asked.

    Input [batch] or [batch, n] numbers; output [batch, n] float32, or [batch, 2n] with the
    indicators (1.0 where missing) after the values. `mean` and `variance` are numbers, or one
    per value of n (an array of a source of the user's).
    """

    def __init__(
        self, mean: float | list[float], variance: float | list[float], indicator: bool, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.mean: float | list[float] = [float(v) for v in mean] if isinstance(mean, list) else float(mean)
        self.variance: float | list[float] = (
            [float(v) for v in variance] if isinstance(variance, list) else float(variance)
        )
        self.indicator = bool(indicator)

    def call(self, x: Any) -> Any:
        x = keras.ops.cast(x, "float32")
        if len(x.shape) == 1:
            x = keras.ops.expand_dims(x, -1)
        missing = keras.ops.isnan(x)
        variance = np.asarray(self.variance, dtype="float64")
        std = np.where(variance > 1e-12, np.sqrt(variance), 1.0)  # a constant train value scales to 0, not NaN
        mean = keras.ops.convert_to_tensor(np.asarray(self.mean, dtype="float32"))
        scaled = keras.ops.where(missing, keras.ops.zeros_like(x), (x - mean) / std.astype("float32"))
        if not self.indicator:
            return scaled
        return keras.ops.concatenate([scaled, keras.ops.cast(missing, "float32")], axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        width = 1 if len(input_shape) == 1 else input_shape[-1]
        return (input_shape[0], None if width is None else width * (2 if self.indicator else 1))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean, "variance": self.variance, "indicator": self.indicator}


@keras.saving.register_keras_serializable(package="pipeline")
class DecodeImages(keras.layers.Layer):
    """Encoded images (PNG, JPEG, GIF, BMP bytes) to float32 in [0, 1] of `shape` [height, width, channels].

    Input [batch] strings; output [batch, height, width, channels]. Channels come from `shape` (1: gray,
    3: RGB); an image of another size is resized (bilinear) to it. Inside the model, so that an export
    takes the bytes a client has.
    """

    def __init__(self, shape: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shape = [int(v) for v in shape]

    def call(self, data: Any) -> Any:
        import tensorflow as tf

        height, width, channels = self.shape

        def decode(one: Any) -> Any:
            image = tf.io.decode_image(one, channels=channels, expand_animations=False)
            image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]
            # Bilinear to the same size gives the pixels back: resizing every image is exact for those that fit.
            return tf.ensure_shape(tf.image.resize(image, [height, width]), self.shape)

        data = tf.reshape(data, [-1])
        return tf.map_fn(decode, data, fn_output_signature=tf.TensorSpec(self.shape, tf.float32))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], *self.shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": self.shape}


def image_inputs(manifest: dict[str, Any]) -> list[str]:
    """The named inputs that hold encoded images."""
    return [name for name in manifest["inputs"] if manifest["features"][name].get("encoding") == "image"]


def feature_width(manifest: dict[str, Any]) -> int:
    """Numbers `encode` makes of the inputs that are not images (0 when there are none)."""
    import math

    width = 0
    for name in manifest["inputs"]:
        column, feature = manifest["columns"][name], manifest["features"][name]
        if column["kind"] == "numeric":
            width += math.prod(feature["shape"]) * (2 if column["missing"] else 1)
        elif column["kind"] == "categorical":
            width += len(column["vocabulary"]) + 1
    return width


def raw_inputs(manifest: dict[str, Any]) -> dict[str, Any]:
    """One `keras.Input` per named input of the manifest, as the shards hold it (strings as strings)."""
    features = manifest["features"]
    return {
        name: keras.Input(shape=tuple(features[name]["shape"]), dtype=features[name]["dtype"], name=name)
        for name in manifest["inputs"]
    }


def encode(manifest: dict[str, Any], inputs: dict[str, Any], allow_none: bool = False) -> Any:
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
        elif column["kind"] == "image":  # decoded by with_preprocessing, for the cnn
            continue
        else:  # strings of a source of the user's (an id, a text): a network of their own takes them
            logger.warning(
                "TrainEstimator: the input %r holds strings, which the built-in networks do not use. A network of "
                "your own that takes input_spec gets it (docs/your-experiment.md).",
                name,
            )
    if not parts and allow_none:
        return None
    if not parts:
        raise ValueError(
            "No input is numbers or a table's categories: the built-in networks have nothing to take. Use a "
            "network of your own that takes input_spec (docs/your-experiment.md)."
        )
    return parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="encoded")(parts)


def with_preprocessing(network: keras.Model, manifest: dict[str, Any]) -> keras.Model:
    """`network`, which takes the encoded [batch, width] vector, behind the preprocessing of the raw inputs."""
    inputs = raw_inputs(manifest)
    images = image_inputs(manifest)
    if not images:
        outputs = network(encode(manifest, inputs))
    else:  # the image to the cnn, the other numbers beside it (networks.build_cnn's num_features)
        if len(images) > 1:
            raise ValueError(
                f"The inputs {', '.join(map(repr, images))} are all images: the built-in cnn takes one. Use a "
                "network of your own that takes input_spec (docs/your-experiment.md)."
            )
        shape = manifest["features"][images[0]]["image_shape"]
        decoded = DecodeImages(shape, name=f"{images[0]}_decoded")(inputs[images[0]])
        others = encode(manifest, {n: t for n, t in inputs.items() if n != images[0]}, allow_none=True)
        if others is not None and len(network.inputs) < 2:
            logger.warning(
                "TrainEstimator: the network %s takes the image %r only: the other inputs are not used.",
                network.name,
                images[0],
            )
            others = None
        outputs = network(decoded if others is None else [decoded, others])
    if "label_statistics" in manifest:  # regression: the network predicts standardised labels
        stats = manifest["label_statistics"]
        std = max(stats["variance"], 1e-12) ** 0.5
        outputs = keras.layers.Rescaling(std, offset=stats["mean"], name="label_units", dtype="float32")(outputs)
    return keras.Model(inputs, outputs, name=network.name)
