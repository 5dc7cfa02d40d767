"""The image input pipeline alone, no model: what each part of it costs. Prints figures; asserts nothing.

Makes the demo shapes and their shards (MakeShapes, CreateShards with
luigi.cfg's defaults; `--images-per-class` for more), then reads, in this
process, with TensorFlow's own loop (`Dataset.reduce`, no Python per element):

1. the raw image files (64x64 PNGs): read only, and read + decoded + resized
   to the shards' size (what a pipeline without shards would do every epoch);
2. the train shards, records only (no parsing);
3. the train shards parsed and decoded (`inputs.eval_dataset`: no augmentation);
4. the training stream (`inputs.train_dataset`: shuffled, parsed, augmented),
   streamed as a split larger than `inputs.IN_MEMORY_BYTES` is, and kept in
   memory as the demo's is (decoded once per pass here: a fresh dataset
   every pass, so the one-off decoding is in the figure).

Examples/s and MB/s (of the files read) per part, median of `--repeat` passes
over at least `--examples` examples after a warm-up pass, and their ratios.
The files are in the page cache (read just before): these are CPU costs, not
the disk's. Each training step of the CNN needs luigi.cfg's batch size
(128) of examples: compare with bench/input_stall.py's synthetic steps/s.

    .venv/bin/python -m bench.input_pipeline [--repeat 5] [--examples 20000] [--images-per-class 300]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common
from pipeline import layout


def rate(make: Callable[[], Any], examples: int, repeat: int) -> list[float]:
    """Examples/s of `make()` (a dataset of batches), each pass timed from a fresh iterator."""
    import tensorflow as tf

    def count(ds: tf.data.Dataset) -> int:
        return int(ds.reduce(tf.constant(0, tf.int64), lambda n, batch: n + tf.shape(batch[0], tf.int64)[0]))

    count(make())  # warm-up: tracing, page cache
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        n = count(make())
        rates.append(n / (time.perf_counter() - started))
        if n < examples:
            raise SystemExit(f"Only {n} examples in a pass, expected at least {examples}.")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--examples", type=int, default=20000, help="examples per timed pass (at least)")
    parser.add_argument("--images-per-class", type=int, default=300, help="MakeShapes images per class")
    args = parser.parse_args()
    print(f"Machine: {common.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with common.workspace(
            root, image_dir=root / common.DEMO_SHAPES, MakeShapes={"images_per_class": args.images_per_class}
        ):
            folder, manifest = common.shards()
            task = common.train_task()
        figures = measure(root / common.DEMO_SHAPES, folder, manifest, task, args.examples, args.repeat)
    report(figures, task.batch_size, args.repeat)
    print(f"Load average at the end: {common.load()}")


def measure(
    raw_dir: Path, folder: Path, manifest: dict[str, Any], task: Any, examples: int, repeat: int
) -> dict[str, tuple[list[float], float]]:
    """Examples/s of each part, and the bytes per example of the files it reads."""
    import tensorflow as tf

    from pipeline.training import estimator, inputs

    estimator.configure_determinism(task.seed)  # as training runs
    batch_size, side = task.batch_size, manifest["image_shape"][0]
    raw_files = sorted(str(p) for p in raw_dir.glob("*/*.png"))
    shard_files = [str(p) for p in layout.shard_files(folder, "train")]
    num_train = manifest["splits"]["train"]["num_examples"]
    raw_bytes = sum(Path(f).stat().st_size for f in raw_files) / len(raw_files)
    shard_bytes = sum(Path(f).stat().st_size for f in shard_files) / num_train
    raw_passes = math.ceil(examples / len(raw_files))
    passes = math.ceil(examples / num_train)
    autotune = tf.data.AUTOTUNE

    def decode_resize(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_png(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, [side, side], antialias=True)

    def raw(parse: bool) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices(raw_files).repeat(raw_passes)
        ds = ds.map(decode_resize if parse else tf.io.read_file, num_parallel_calls=autotune)
        return ds.batch(batch_size).map(lambda x: (x,)).prefetch(autotune)

    def records() -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices(shard_files).repeat(passes)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=len(shard_files), num_parallel_calls=autotune)
        return ds.batch(batch_size).map(lambda x: (x,)).prefetch(autotune)

    def parsed() -> tf.data.Dataset:
        return inputs.eval_dataset(folder, manifest, "train", batch_size).repeat(passes)

    def training(in_memory_bytes: int) -> tf.data.Dataset:
        limit, inputs.IN_MEMORY_BYTES = inputs.IN_MEMORY_BYTES, in_memory_bytes  # decided when it is built
        try:
            ds = inputs.train_dataset(
                folder, manifest, batch_size, task.seed, task.shuffle_buffer, augment=task.settings().augment
            )
        finally:
            inputs.IN_MEMORY_BYTES = limit
        return ds.take(math.ceil(examples / batch_size))

    in_memory = inputs.parsed_bytes(manifest, "train")

    return {
        "raw files, read": (rate(lambda: raw(False), examples, repeat), raw_bytes),
        "raw files, read + decode + resize": (rate(lambda: raw(True), examples, repeat), raw_bytes),
        "shards, records only": (rate(records, examples, repeat), shard_bytes),
        "shards, parsed (eval_dataset)": (rate(parsed, examples, repeat), shard_bytes),
        "train_dataset: streamed, parsed + augmented": (rate(lambda: training(0), examples, repeat), shard_bytes),
        "train_dataset: in memory, augmented": (rate(lambda: training(in_memory), examples, repeat), shard_bytes),
    }


def report(figures: dict[str, tuple[list[float], float]], batch_size: int, repeat: int) -> None:
    print(f"Image input pipeline alone, median (min-max) of {repeat} passes, files in the page cache:")
    records = common.median(figures["shards, records only"][0])
    for name, (rates, bytes_per_example) in figures.items():
        examples = common.median(rates)
        print(
            f"  {name:<46} {common.spread(rates, 0):>24} examples/s  {examples * bytes_per_example / 1e6:7.1f} MB/s"
            f"  {examples / batch_size:7.1f} batches/s  {examples / records:6.3f}x records only"
        )
    parsed = common.median(figures["shards, parsed (eval_dataset)"][0])
    augmented = common.median(figures["train_dataset: streamed, parsed + augmented"][0])
    raw = common.median(figures["raw files, read + decode + resize"][0])
    print(
        f"  wall time per example on {os.cpu_count()} cores: parsing {(1 / parsed - 1 / records) * 1e6:.1f} us, "
        f"augmentation and shuffling {(1 / augmented - 1 / parsed) * 1e6:.1f} us"
    )
    print(f"  parsed shards vs decoding the raw files: {parsed / raw:.2f}x the examples/s")


if __name__ == "__main__":
    main()
