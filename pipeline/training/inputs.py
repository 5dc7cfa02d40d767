"""tf.data readers of the shards (imports TensorFlow: reached from `run()` only).

Training: list_files shuffled -> parallel interleave of TFRecordDatasets ->
shuffle -> repeat -> batch -> skip the batches a resumed run has seen ->
vectorised parse (images: one parse of the batch, each PNG decoded) ->
augmentation of the whole batch at once (images) -> prefetch. A split that
takes at most `IN_MEMORY_BYTES` parsed (the sine, the demo shapes) is
instead read and parsed once, kept in memory and permuted every epoch: its
examples are so cheap, or so few, that tf.data's work per example and the
decoding of every image every epoch, not the model, would take the CPU time
(bench/input_stall.py). Evaluation and prediction: the sorted shards,
unshuffled, finite, deterministic, never augmented.

Images are PNGs already resized to the manifest's `image_shape` by
CreateShards; they come out as float32 in [0, 1], shape [height, width, 3].
Augmentation (training only) uses stateless random ops seeded by the run's
seed and the batch's position in the stream: the same run sees the same
augmented images, however many threads decode them, and a resumed run sees
what an unbroken one would have.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline import layout, problems
from pipeline.errors import DataError

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
        if isinstance(inputs, str):
            return features[inputs], features[label]
        return {name: features[name] for name in inputs}, features[label]  # named inputs: a table's columns

    return parse


def _shards(folder: Path, split: str) -> list[str]:
    files = [str(p) for p in layout.shard_files(folder, split)]
    if not files:
        raise FileNotFoundError(
            f"No {split} shards in {folder / split}. Rebuild them: luigi --module pipeline CreateShards"
        )
    return files


STRING_BYTES = 64  # what a parsed string feature (a table's category) is taken to hold, for IN_MEMORY_BYTES

# A train split whose parsed examples (images: decoded, uint8) take at most this
# many bytes is read and parsed once and kept in memory; a larger one streams.
IN_MEMORY_BYTES = 32 << 20


def train_dataset(
    folder: Path,
    manifest: dict[str, Any],
    batch_size: int,
    seed: int,
    shuffle_buffer: int,
    skip_batches: int = 0,
    *,
    augment: Sequence[str] = (),
) -> tf.data.Dataset:
    """The endless, shuffled training stream of (inputs, label) batches, images augmented by `augment`.

    The order is a function of `seed` alone, so a run resumed at step `s`
    skips the `s` batches it already trained on (before parsing, so skipping
    costs only the reads) and sees what an uninterrupted run would have seen.
    A split of at most `IN_MEMORY_BYTES` parsed is parsed once, kept in
    memory and fully reshuffled every epoch (`shuffle_buffer` then plays no
    part); a larger one streams through a shuffle buffer.
    """
    files = _shards(folder, "train")
    in_memory = parsed_bytes(manifest, "train") <= IN_MEMORY_BYTES
    if in_memory:
        ds = _in_memory_batches(files, manifest, batch_size, seed)  # parsed already
    else:
        ds = tf.data.Dataset.list_files(files, shuffle=True, seed=seed)
        ds = ds.interleave(
            tf.data.TFRecordDataset,
            cycle_length=len(files),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=True)
    if not is_image(manifest):
        ds = ds.skip(skip_batches)
        if not in_memory:
            ds = ds.map(parser(manifest), num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.prefetch(AUTOTUNE)
    decode = _image_decoder(manifest)
    names = tuple(augment)

    def augmented(index: tf.Tensor, batch: Any) -> Parsed:
        images, labels = batch if in_memory else decode(batch)  # uint8: augment converts after its gathers
        return apply_augmentations(images, tf.stack([tf.cast(seed, tf.int64), index]), names), labels

    # Number the batches first: the index seeds each one's augmentation.
    ds = ds.enumerate().skip(skip_batches)
    ds = ds.map(augmented, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def parsed_bytes(manifest: dict[str, Any], split: str) -> int:
    """What a split takes in memory parsed: images decoded (uint8) with their labels, or the features."""
    if is_image(manifest):
        per_example = math.prod(manifest["image_shape"]) + tf.int64.size
    else:
        per_example = sum(
            math.prod(f["shape"]) * (STRING_BYTES if f["dtype"] == "string" else tf.dtypes.as_dtype(f["dtype"]).size)
            for f in manifest["features"].values()
        )
    return int(manifest["splits"][split]["num_examples"] * per_example)


def _in_memory_batches(files: list[str], manifest: dict[str, Any], batch_size: int, seed: int) -> tf.data.Dataset:
    """Endless batches of a small split parsed once (images: uint8), a new permutation every epoch.

    Every epoch is a full shuffle, a function of (seed, epoch); batches run on
    across epochs, as with shuffle -> repeat -> batch. A step then costs the
    input a slice of memory, not tf.data's work per example (for the sine,
    that work would take longer than the step itself).
    """
    num_examples = manifest["splits"]["train"]["num_examples"]
    parse = _image_decoder(manifest) if is_image(manifest) else parser(manifest)
    split = tf.data.TFRecordDataset(files).batch(num_examples).map(parse).cache()  # one element: the split

    def permute(epoch: tf.Tensor, parsed: Parsed) -> Parsed:
        count = tf.shape(parsed[1])[0]  # num_examples, or a worker's share if the files are sharded
        order = tf.random.experimental.stateless_shuffle(tf.range(count), tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.nest.map_structure(lambda tensor: tf.gather(tensor, order), parsed)

    return split.repeat().enumerate().map(permute).rebatch(batch_size, drop_remainder=True)


def eval_dataset(
    folder: Path, manifest: dict[str, Any], split: str, batch_size: int, *, with_ids: bool = False
) -> tf.data.Dataset:
    """One deterministic pass over a split, in shard order, as (inputs, label) batches.

    Its length is known from the manifest (Keras then knows where an epoch
    ends), and a split with more or fewer examples fails instead of passing.
    `with_ids`: (inputs, label, id) batches, the id parsed from the same
    records (the manifest's `example_id` feature: an image's file, a table's
    line; `decode_ids` makes them strings).
    """
    num_batches = math.ceil(manifest["splits"][split]["num_examples"] / batch_size)
    ds = tf.data.TFRecordDataset(_shards(folder, split))
    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(num_batches))
    parse = image_batch_parser(manifest) if is_image(manifest) else parser(manifest)
    ds = ds.map(_with_ids(parse, manifest) if with_ids else parse, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def _with_ids(parse: Callable[[tf.Tensor], Parsed], manifest: dict[str, Any]) -> Callable[[tf.Tensor], Any]:
    """`parse`, followed by the ids of the batch (the manifest's `example_id` feature) as a third element."""
    name = manifest["example_id"]
    spec = {name: tf.io.FixedLenFeature([], tf.dtypes.as_dtype(manifest["features"][name]["dtype"]))}

    def parse_with_ids(serialized: tf.Tensor) -> tuple[Any, Any, Any]:
        return *parse(serialized), tf.io.parse_example(serialized, spec)[name]

    return parse_with_ids


def decode_ids(ids: np.ndarray) -> list[str]:
    """Parsed ids (bytes: an image's file; numbers: a table's line) as strings."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in ids.tolist()]


# --- images -------------------------------------------------------------------------

# Augmentations, training only (names in problems.AUGMENTATIONS): a left-right or
# top-bottom flip, a crop shifting the image by up to 1/8 of its side (padded by
# reflection), and a brightness change.
MAX_SHIFT_FRACTION = 1 / 8
MAX_BRIGHTNESS_DELTA = 0.2


def is_image(manifest: dict[str, Any]) -> bool:
    """Whether the inputs are encoded images (decoded per batch) rather than numbers."""
    if not isinstance(manifest["inputs"], str):
        return False
    return bool(manifest["features"][manifest["inputs"]].get("encoding") == "png")


def input_shape(manifest: dict[str, Any]) -> tuple[int, ...]:
    """The shape of one parsed input example (what the network takes)."""
    if is_image(manifest):
        return tuple(manifest["image_shape"])
    if "input_shape" in manifest:  # named inputs: what preprocessing makes of them (training/preprocessing.py)
        return tuple(manifest["input_shape"])
    return tuple(manifest["features"][manifest["inputs"]]["shape"])


def image_parser(manifest: dict[str, Any]) -> Callable[[tf.Tensor], Parsed]:
    """A function parsing one serialised Example into (image float32 in [0, 1], label int64)."""
    parse_batch = image_batch_parser(manifest)

    def parse(serialized: tf.Tensor) -> Parsed:
        images, labels = parse_batch(serialized[tf.newaxis])
        return images[0], labels[0]

    return parse


def image_batch_parser(manifest: dict[str, Any]) -> Callable[[tf.Tensor], Parsed]:
    """A function parsing a batch of serialised Examples into (images float32 in [0, 1], labels int64)."""
    decode = _image_decoder(manifest)

    def parse(serialized: tf.Tensor) -> Parsed:
        images, labels = decode(serialized)
        return tf.image.convert_image_dtype(images, tf.float32), labels

    return parse


def _image_decoder(manifest: dict[str, Any]) -> Callable[[tf.Tensor], Parsed]:
    """A function parsing a batch of serialised Examples into (images uint8, labels int64).

    One vectorised parse of the batch, then each PNG decoded (the one step
    that is per image) and checked against its recorded shape and the
    manifest's.
    """
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "shape": tf.io.FixedLenFeature([3], tf.int64),
    }
    image_shape = manifest["image_shape"]

    def decode_one(example: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        data, shape = example
        image = tf.reshape(tf.io.decode_png(data, channels=3), shape)  # the recorded shape, checked
        return tf.ensure_shape(image, image_shape)

    def decode(serialized: tf.Tensor) -> Parsed:
        features = tf.io.parse_example(serialized, spec)
        images = tf.map_fn(
            decode_one,
            (features["image"], features["shape"]),
            fn_output_signature=tf.TensorSpec(image_shape, tf.uint8),
        )
        return images, features["label"]

    return decode


def _shifted(size: int, pad: int, offsets: tf.Tensor, flips: tf.Tensor | None = None) -> tf.Tensor:
    """[batch, size] source indices along one axis: shifted by `offsets - pad`, reflected at the
    edges (as a REFLECT pad then a crop), then mirrored where `flips`."""
    index = tf.abs(tf.range(size)[tf.newaxis, :] + offsets[:, tf.newaxis] - pad)
    index = (size - 1) - tf.abs((size - 1) - index)
    if flips is not None:
        index = tf.where(flips[:, tf.newaxis], size - 1 - index, index)
    return index


def apply_augmentations(images: tf.Tensor, seed: tf.Tensor, names: Sequence[str]) -> tf.Tensor:
    """Augment images, a batch [n, h, w, c] or one [h, w, c], by the named augmentations; float32 in [0, 1] out.

    Images are uint8 or float32 in [0, 1]. Each image gets its own draws; all
    are a function of `seed` ([2] int64), one stream per augmentation (so
    turning one off leaves the others' draws as they were). Done with index
    arithmetic and two gathers over the whole batch rather than per image ops:
    a handful of ops per batch, not per image. The gathers move uint8 pixels
    (a quarter of the bytes) and the conversion to float follows them: the
    same values as converting first, for less of the CPU that training shares.
    """
    unknown = set(names) - set(problems.AUGMENTATIONS)
    if unknown:
        raise ValueError(f"Unknown augmentations {sorted(unknown)}. Expected names from {problems.AUGMENTATIONS}.")
    single = images.shape.rank == 3
    if single:
        images = images[tf.newaxis]
    flip_seed, crop_seed, brightness_seed, vertical_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    count, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    shift = "shift" in names
    pad = max(1, round(min(height, width) * MAX_SHIFT_FRACTION)) if shift else 0
    offsets = tf.random.stateless_uniform([count, 2], crop_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    flips = tf.random.stateless_uniform([count], flip_seed) < 0.5 if "flip_horizontal" in names else None
    vertical = tf.random.stateless_uniform([count], vertical_seed) < 0.5 if "flip_vertical" in names else None
    if shift or vertical is not None:
        images = tf.gather(images, _shifted(height, pad, offsets[:, 0], vertical), axis=1, batch_dims=1)
    if shift or flips is not None:
        images = tf.gather(images, _shifted(width, pad, offsets[:, 1], flips), axis=2, batch_dims=1)
    images = tf.image.convert_image_dtype(images, tf.float32)
    if "brightness" in names:
        delta = tf.random.stateless_uniform([count], brightness_seed, -MAX_BRIGHTNESS_DELTA, MAX_BRIGHTNESS_DELTA)
        images = tf.clip_by_value(images + delta[:, tf.newaxis, tf.newaxis, tf.newaxis], 0.0, 1.0)
    return images[0] if single else images


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


@contextlib.contextmanager
def corrupt_shards_named(shards_dir: Path) -> Iterator[None]:
    """Turn TensorFlow's DataLossError into a DataError naming the damaged shards and the fix."""
    try:
        yield
    except tf.errors.DataLossError as error:
        damaged = []
        for split in layout.SPLITS:
            for shard in layout.shard_files(shards_dir, split):
                try:
                    for _ in tf.data.TFRecordDataset(str(shard)):
                        pass
                except tf.errors.DataLossError:
                    damaged.append(str(shard))
        raise DataError(
            f"Corrupt shard {', '.join(damaged) or 'in ' + str(shards_dir)} ({error.message}). "
            "Rebuild it with: luigi --module pipeline Repro --local-scheduler"
        ) from None
