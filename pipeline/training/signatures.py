"""The SavedModel's serving signatures: what a client has in, class names out (imports TensorFlow).

Two `tf.function`s around the trained Keras model, saved with Keras' `ExportArchive`
(the model's variables and lookup tables with them): the SavedModel loads with
`tf.saved_model.load` in a process that knows nothing of the project (no Keras
objects to register). Two signatures:

- `serving_default` (TF Serving's and the Estimator's convention): `examples`,
  string [-1], serialized `tf.train.Example`s holding the raw features by name.
  The sine: `x` (float). An image: `image` (bytes: the encoded file). A table:
  each column under its column name as in the CSV header (float for a numeric
  column, NaN or absent when missing; bytes for a categorical one, absent when
  missing).
- `raw`: the same features as tensors. The sine: `x` float32 [-1]. An image:
  `image_bytes` string [-1]. A table: one input per used column, named as the
  column (float32 [-1] numeric, string [-1] categorical); a column whose name
  is not an identifier (`[A-Za-z][A-Za-z0-9_]*`) takes its name in the shards
  (lower case, `_` for the rest: `Culmen Length (mm)` -> `culmen_length_mm`),
  then `_2`, `_3`... while that is taken.

Outputs of both: classification: `probabilities` float32 [-1, K], `class_ids`
int64 [-1] and `classes` string [-1] (the manifest's class names); regression
with one output: `predictions` float32 [-1].

What the ETL does to a raw value happens in the graph: an image is decoded,
converted to RGB and resized to the training size (`image_decoding.py`), then
scaled to [0, 1] as the shards are read (training/inputs.py); a table's cell is
what `etl/columns.py` writes (a category stripped, a missing token such as
`NA` the missing category ""; a number that is not finite missing). A table's
imputation, scaling and lookups are layers of the model (training/preprocessing.py).

The mapping from the features' names to the signatures' is in the SavedModel's folder,
`assets.extra/serving.json` (`SERVING_INFO`), with the problem and the class names.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from pipeline.schema import named_inputs
from pipeline.training import image_decoding, inputs

SERVING_INFO = "serving.json"  # the signatures' inputs by name, problem, classes
SERVING_INFO_DIR = "assets.extra"  # in the SavedModel: files beside the graph (TF Serving's convention)
RAW = "raw"
DEFAULT = "serving_default"
EXAMPLES = "examples"  # serving_default's one input
IMAGE_BYTES = "image_bytes"  # the raw signature's input of an image model
# etl/columns.py MISSING (tests/test_signatures.py checks they agree): a category that is one of
# these, stripped and lower-cased, is the missing category "". Not imported: the ETL is not training's code.
MISSING_TOKENS = ("", "na", "nan", "null", "?", "n/a", "none")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def describe(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the signatures take and give, from the manifest: the serving info written into the export.

    `inputs`: one entry per input feature (in the manifest's order): its `feature` name in the
    shards, `example_key` (its name in serving_default's Examples), `raw_name` (the raw
    signature's argument), `dtype`, `shape` (of one example) and, for a table, its `kind`.
    """
    features = manifest["features"]
    if inputs.is_image(manifest):
        name = manifest["inputs"]
        entries = [{"feature": name, "example_key": name, "raw_name": IMAGE_BYTES, "dtype": "string", "shape": []}]
        entries[0]["kind"] = "image"
    elif not named_inputs(manifest):
        name = manifest["inputs"]
        entries = [{"feature": name, "example_key": name, "raw_name": name, **_spec(features[name])}]
    else:
        columns = manifest.get("columns", {})
        entries = []
        for name in manifest["inputs"]:
            column = columns.get(name, {})
            entry = {"feature": name, "example_key": column.get("column", name), **_spec(features[name])}
            if "kind" in column:
                entry["kind"] = column["kind"]
            entries.append(entry)
        for entry, raw_name in zip(entries, raw_names(entries), strict=True):
            entry["raw_name"] = raw_name
    info: dict[str, Any] = {"problem": manifest["problem"], "inputs": entries, "signatures": [DEFAULT, RAW]}
    if manifest.get("class_names"):
        info["class_names"] = list(manifest["class_names"])
    if inputs.is_image(manifest):
        info["image_shape"] = list(manifest["image_shape"])
    return info


def _spec(feature: dict[str, Any]) -> dict[str, Any]:
    return {"dtype": feature["dtype"], "shape": list(feature["shape"])}


def raw_names(entries: list[dict[str, Any]]) -> list[str]:
    """The raw signature's argument names: the column's name where it is an identifier, else its
    name in the shards, with `_2`, `_3`... while that is taken (deterministic, in column order)."""
    taken = {entry["example_key"] for entry in entries if _IDENTIFIER.match(entry["example_key"])}
    names = []
    for entry in entries:
        key = entry["example_key"]
        if _IDENTIFIER.match(key):
            names.append(key)
            continue
        base = entry["feature"] if _IDENTIFIER.match(entry["feature"]) else "c_" + re.sub(r"\W", "_", key)
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate)
        names.append(candidate)
    return names


def _tf_shape(entry: dict[str, Any]) -> list[int]:
    """One example's shape in the signatures: a single number is a scalar (x: float32 [-1], not [-1, 1])."""
    shape = list(entry["shape"])
    return [] if shape == [1] else shape


def _default(entry: dict[str, Any]) -> Any:
    """The value of a table's column absent from an Example: missing (NaN, ""); None (required) otherwise."""
    if entry.get("kind") not in ("numeric", "categorical", "text"):
        return None
    if entry["dtype"] == "string":
        fill: Any = ""
    elif entry["dtype"].startswith("float"):
        fill = math.nan
    else:
        return None
    shape = _tf_shape(entry)
    return [fill] * math.prod(shape) if shape else fill


class Signatures:
    """The functions of the two signatures, around the trained model."""

    def __init__(self, model: keras.Model, manifest: dict[str, Any]) -> None:
        self.model = model
        self._manifest = manifest
        self._info = describe(manifest)
        self._class_names = tf.constant(self._info.get("class_names", []), tf.string)

    # --- from the raw inputs to what the model takes -------------------------------

    def _model_inputs(self, raw: dict[str, tf.Tensor]) -> Any:
        manifest, entries = self._manifest, self._info["inputs"]
        if inputs.is_image(manifest):
            size = int(manifest["image_shape"][0])
            images = tf.map_fn(
                lambda data: image_decoding.decode_like_etl(data, size),
                raw[IMAGE_BYTES],
                fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
            )
            return tf.image.convert_image_dtype(images, tf.float32)  # as training/inputs.py reads the shards
        if not named_inputs(manifest):
            (entry,) = entries
            x = raw[entry["raw_name"]]
            return tf.reshape(x, [-1, *entry["shape"]])
        features = {}
        for entry in entries:
            x = raw[entry["raw_name"]]
            if entry.get("kind") == "categorical":  # as etl/columns.py Column.value writes a cell
                x = tf.strings.strip(x)
                missing = tf.reduce_any(
                    tf.equal(tf.strings.lower(x)[..., tf.newaxis], tf.constant(MISSING_TOKENS)), axis=-1
                )
                x = tf.where(missing, tf.constant(""), x)
            elif entry.get("kind") == "numeric" and x.dtype.is_floating:  # integers have no missing value
                x = tf.where(tf.math.is_finite(x), x, tf.constant(math.nan, x.dtype))
            features[entry["feature"]] = tf.reshape(x, [-1, *entry["shape"]])
        return features

    def _outputs(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        predicted = tf.cast(self.model(self._model_inputs(raw), training=False), tf.float32)
        if self._info.get("class_names"):
            class_ids = tf.argmax(predicted, axis=-1, output_type=tf.int64)
            return {
                "probabilities": predicted,
                "class_ids": class_ids,
                "classes": tf.gather(self._class_names, class_ids),
            }
        if predicted.shape[-1] == 1:
            predicted = tf.squeeze(predicted, axis=-1)
        return {"predictions": predicted}

    # --- the signatures ----------------------------------------------------------------

    def raw_spec(self) -> dict[str, tf.TensorSpec]:
        spec = {
            entry["raw_name"]: tf.TensorSpec([None, *_tf_shape(entry)], entry["dtype"], name=entry["raw_name"])
            for entry in self._info["inputs"]
        }
        if inputs.is_image(self._manifest):
            spec = {IMAGE_BYTES: tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)}
        return spec

    def raw(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return self._outputs(features)

    def examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        spec = {}
        for entry in self._info["inputs"]:
            shape, default = _tf_shape(entry), _default(entry)
            spec[entry["example_key"]] = tf.io.FixedLenFeature(shape, entry["dtype"], default_value=default)

        parsed = tf.io.parse_example(examples, spec)
        return self._outputs({entry["raw_name"]: parsed[entry["example_key"]] for entry in self._info["inputs"]})


def export(model: keras.Model, manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write the SavedModel of `model` with its two signatures to `path`; return the serving info.

    Keras' ExportArchive saves the model's variables and lookup tables with the endpoints.
    """
    functions = Signatures(model, manifest)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(DEFAULT, functions.examples, [tf.TensorSpec([None], tf.string, name=EXAMPLES)])
    archive.add_endpoint(RAW, functions.raw, [functions.raw_spec()])
    archive.write_out(str(path), verbose=False)
    info = describe(manifest)
    (path / SERVING_INFO_DIR).mkdir(exist_ok=True)
    (path / SERVING_INFO_DIR / SERVING_INFO).write_text(json.dumps(info, indent=1) + "\n")
    return info
