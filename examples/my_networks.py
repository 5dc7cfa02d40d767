"""A network of your own for named inputs (`--TrainEstimator-network my_networks:build_text_classifier`).

A builder that names `input_spec` gets the raw named inputs of a source of
your own (name -> {"dtype", "shape"}) and returns a model taking them as a
dict: here strings, through Keras' TextVectorization.
"""

from __future__ import annotations

from typing import Any

import keras


def build_text_classifier(
    input_shape: Any, num_outputs: int, problem: str, input_spec: dict[str, Any], vocabulary: list[str] | None = None
) -> keras.Model:
    """Words of the `text` input counted over a fixed vocabulary (TextVectorization), then a softmax."""
    text = keras.Input(shape=tuple(input_spec["text"]["shape"]), dtype="string", name="text")
    words = vocabulary or ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot"]
    counts = keras.layers.TextVectorization(vocabulary=words, output_mode="count", name="words")(text)
    outputs = keras.layers.Dense(num_outputs, activation="softmax", name="outputs")(counts)
    return keras.Model({"text": text}, outputs, name="text_classifier")
