"""tf.data readers of the shards (imports TensorFlow: reached from `run()` only).

Training: list_files shuffled -> parallel interleave of TFRecordDatasets ->
shuffle -> repeat -> batch -> vectorised parse -> prefetch. Evaluation and
prediction: the sorted shards, unshuffled, finite, deterministic.
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
    ds = ds.repeat().batch(batch_size, drop_remainder=True)
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
    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(num_batches))
    ds = ds.map(parser(manifest), num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)
