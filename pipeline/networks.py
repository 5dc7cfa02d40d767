"""The built-in networks: the `model_fn` of this pipeline (imports Keras).

Each builder takes what a network of a user's own takes (pipeline/builders.py):
`input_shape`, `num_outputs`, `problem` ("regression" or "classification")
and its own keyword arguments, and returns an uncompiled `keras.Model` whose
output is the prediction (regression) or class probabilities (softmax,
classification). TRAIN, EVAL and PREDICT are `fit`, `evaluate` and `predict`
on that same model once `estimator.py` has compiled it.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from pipeline import problems


def output_layer(num_outputs: int, problem: str, name: str = "outputs") -> keras.layers.Dense:
    """The last layer a network of this problem ends in (float32 even under mixed precision)."""
    activation = problems.get(problem).output_activation
    return keras.layers.Dense(num_outputs, activation=activation, name=name, dtype="float32")


def build_mlp(
    input_shape: Sequence[int],
    num_outputs: int,
    problem: str,
    hidden_units: Sequence[int] = (100, 100),
    dropout: float = 0.0,
) -> keras.Model:
    """Dense ReLU layers of `hidden_units`, each followed by dropout at rate `dropout` if it is above 0,
    then the output layer (the seed's network); images are flattened."""
    inputs = keras.Input(shape=tuple(input_shape), name="x")
    h = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(h)
        if dropout > 0:  # the sine and images: none, their networks as they were
            h = keras.layers.Dropout(dropout, name=f"dropout_{i}")(h)
    return keras.Model(inputs, output_layer(num_outputs, problem, name="y")(h), name="mlp")


def build_cnn(
    input_shape: Sequence[int],
    num_outputs: int,
    problem: str,
    conv_filters: Sequence[int] = (16, 32, 64),
    dense_units: int = 64,
    num_features: int = 0,
) -> keras.Model:
    """A small convolutional network of images in [0, 1].

    One block per entry of `conv_filters`: 3x3 convolution, batch
    normalisation, ReLU, 2x2 max pooling (each block halves height and
    width). Then global average pooling, a dense ReLU layer of `dense_units`
    and the output layer (class probabilities for classification).
    `num_features` above 0: a second input of that many numbers (those beside
    the image in a source of the user's, standardised), joined to the pooled
    image before the dense layer.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    h = inputs
    for i, filters in enumerate(conv_filters):
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv_{i}")(h)
        h = keras.layers.BatchNormalization(momentum=0.9, name=f"batch_norm_{i}")(h)
        h = keras.layers.ReLU(name=f"relu_{i}")(h)
        h = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(h)
    h = keras.layers.GlobalAveragePooling2D(name="global_pool")(h)
    model_inputs: keras.KerasTensor | list[keras.KerasTensor] = inputs
    if num_features > 0:
        features = keras.Input(shape=(num_features,), name="features")
        h = keras.layers.Concatenate(name="with_features")([h, features])
        model_inputs = [inputs, features]
    h = keras.layers.Dense(dense_units, activation="relu", name="dense")(h)
    return keras.Model(model_inputs, output_layer(num_outputs, problem)(h), name="cnn")
