"""tf.data readers of the shards (imports TensorFlow: reached from `run()` only).

Training: list_files shuffled -> parallel interleave of TFRecordDatasets ->
shuffle -> repeat -> then, for the sine, batch -> vectorised parse; for
images, parallel decode / normalise / augment per example -> batch; ->
prefetch. Evaluation and prediction: the sorted shards, unshuffled, finite,
deterministic, never augmented.

Images are PNGs already resized to the manifest's `image_shape` by
CreateShards; they come out as float32 in [0, 1], shape [height, width, 3].
Augmentation (training only) uses stateless random ops seeded by the run's
seed and the example's position in the stream: the same run sees the same
augmented images, however many threads decode them, and a resumed run sees
what an unbroken one would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from pipeline import paths

AUTOTUNE = tf.data.AUTOTUNE
Parsed = tuple[Any, Any]


def parser(manifest: dict[str, Any]) -> Callable[[tf.Tensor], Parsed]:
    """A function parsing a batch of serialised Examples into (inputs, label)."""
    spec = {
        name: tf.io.FixedLenFeature(f["shape"], tf.dtypes.as_dtype(f["dtype"]))
        for name, f in manifest["features"].items()
    }
    inputs, label = manifest["inputs"], manifest["label"]

    def parse(serialized: tf.Tensor) -> Parsed:
        features = tf.io.parse_example(serialized, spec)
        return features[inputs], features[label]

    return parse


def _shards(folder: Path, split: str) -> list[str]:
    files = [str(p) for p in paths.shard_files(folder, split)]
    if not files:
        raise FileNotFoundError(
            f"No {split} shards in {folder / split}. Rebuild them: luigi --module pipeline CreateShards"
        )
    return files


def train_dataset(
    folder: Path,
    manifest: dict[str, Any],
    batch_size: int,
    seed: int,
    shuffle_buffer: int,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """The endless, shuffled training stream of (inputs, label) batches.

    The order is a function of `seed` alone, so a run resumed at step `s`
    skips the `s` batches it already trained on (before parsing, so skipping
    costs only the reads) and sees what an uninterrupted run would have seen.
    """
    files = _shards(folder, "train")
    ds = tf.data.Dataset.list_files(files, shuffle=True, seed=seed)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=len(files),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat()
    if is_image(manifest):
        # Number the examples first: the index seeds each one's augmentation.
        ds = ds.enumerate().skip(skip_batches * batch_size)
        parse = image_parser(manifest)

        def parse_and_augment(index: tf.Tensor, serialized: tf.Tensor) -> Parsed:
            image, label = parse(serialized)
            return augment(image, tf.stack([tf.cast(seed, tf.int64), index])), label

        ds = ds.map(parse_and_augment, num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    if skip_batches:
        ds = ds.skip(skip_batches)
    ds = ds.map(parser(manifest), num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def eval_dataset(folder: Path, manifest: dict[str, Any], split: str, batch_size: int) -> tf.data.Dataset:
    """One deterministic pass over a split, in shard order, as (inputs, label) batches.

    Its length is known from the manifest (Keras then knows where an epoch
    ends), and a split with more or fewer examples fails instead of passing.
    """
    num_batches = math.ceil(manifest["splits"][split]["num_examples"] / batch_size)
    ds = tf.data.TFRecordDataset(_shards(folder, split))
    if is_image(manifest):
        ds = ds.map(image_parser(manifest), num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(num_batches))
        return ds.prefetch(AUTOTUNE)
    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(num_batches))
    ds = ds.map(parser(manifest), num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


# --- images -------------------------------------------------------------------------

# Augmentation, training only: a left-right flip, a crop shifting the image by up
# to 1/8 of its side (padded by reflection), and a brightness change.
MAX_SHIFT_FRACTION = 1 / 8
MAX_BRIGHTNESS_DELTA = 0.2


def is_image(manifest: dict[str, Any]) -> bool:
    """Whether the shards hold images (classification) rather than the sine's numbers."""
    return bool(manifest.get("task") == "classification")


def input_shape(manifest: dict[str, Any]) -> tuple[int, ...]:
    """The shape of one parsed input example (what the network takes)."""
    if is_image(manifest):
        return tuple(manifest["image_shape"])
    return tuple(manifest["features"][manifest["inputs"]]["shape"])


def image_parser(manifest: dict[str, Any]) -> Callable[[tf.Tensor], Parsed]:
    """A function parsing one serialised Example into (image float32 in [0, 1], label int64)."""
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "shape": tf.io.FixedLenFeature([3], tf.int64),
    }
    image_shape = manifest["image_shape"]

    def parse(serialized: tf.Tensor) -> Parsed:
        features = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_png(features["image"], channels=3)
        image = tf.ensure_shape(tf.reshape(image, features["shape"]), image_shape)  # the recorded shape, checked
        return tf.image.convert_image_dtype(image, tf.float32), features["label"]

    return parse


def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flip, shift-crop and brighten one [h, w, c] image in [0, 1]; a function of `seed` ([2] int64)."""
    flip_seed, crop_seed, brightness_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    height, width = image.shape[0], image.shape[1]
    pad = max(1, round(min(height, width) * MAX_SHIFT_FRACTION))
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    image = tf.image.stateless_random_crop(padded, tf.shape(image), crop_seed)
    image = tf.image.stateless_random_brightness(image, MAX_BRIGHTNESS_DELTA, brightness_seed)
    return tf.clip_by_value(image, 0.0, 1.0)


def take_images(folder: Path, manifest: dict[str, Any], split: str, indices: list[int]) -> dict[int, Any]:
    """The parsed images at `indices` of a split (in evaluation order), as NumPy arrays by index."""
    wanted = set(indices)
    found = {}
    ds = tf.data.TFRecordDataset(_shards(folder, split)).map(image_parser(manifest))
    for i, (image, _) in enumerate(ds):
        if i in wanted:
            found[i] = image.numpy()
            if len(found) == len(wanted):
                break
    return found
