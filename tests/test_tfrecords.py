"""TFRecords the user has already: `--CreateShards-tfrecords GLOB` (pipeline/etl/tfrecords.py).

The files are written by TensorFlow itself (tf.io.TFRecordWriter of tf.train.Example), as a user's would be;
the pipeline reads them back without TensorFlow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline import layout
from pipeline.etl import tfrecords
from pipeline.schema import read_manifest
from tests.conftest import make_root, run_cli

SHORT = "[TrainEstimator]\nmax_steps = 300\ncheckpoint_steps = 100\nbatch_size = 64\n"


def example(x: list[float], label: bytes, tag: bytes, count: int) -> tf.train.Example:
    feature = {
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=x)),
        "kind": tf.train.Feature(bytes_list=tf.train.BytesList(value=[label])),
        "tag": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tag])),
        "count": tf.train.Feature(int64_list=tf.train.Int64List(value=[count])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_blobs(folder: Path, name: str, count: int, seed: int, files: int = 2) -> list[Path]:
    """Two classes of points around (-1, -1) and (1, 1), in `files` TFRecord files."""
    rng = np.random.default_rng(seed)
    paths = [folder / f"{name}-{i}.tfrecord" for i in range(files)]
    writers = [tf.io.TFRecordWriter(str(path)) for path in paths]
    for i in range(count):
        label = i % 2
        x = (rng.normal(size=2) * 0.5 + (1 if label else -1)).tolist()
        writers[i % files].write(example(x, b"high" if label else b"low", f"id{i}".encode(), -i).SerializeToString())
    for writer in writers:
        writer.close()
    return paths


def test_examples_written_by_tensorflow_decode_without_it(tmp_path: Path) -> None:
    record = example([0.5, -2.25], b"low", b"\x00\xff", -7).SerializeToString()
    decoded = tfrecords.decode_example(record)
    assert decoded == {"x": ("float", [0.5, -2.25]), "kind": ("bytes", [b"low"]), "tag": ("bytes", [b"\x00\xff"]),
                       "count": ("int64", [-7])}  # fmt: skip
    [path] = write_blobs(tmp_path, "one", 5, seed=0, files=1)
    assert tfrecords.count_records(path) == 5


def luigi(folder: Path, *args: str) -> tuple[int, str]:
    out = run_cli(["luigi", "--module", "pipeline", *args, "--local-scheduler"], cwd=folder)
    return out.returncode, out.stdout + out.stderr


def test_tfrecords_train_split_by_the_pipeline_or_as_given_and_their_listing_is_the_identity(tmp_path: Path) -> None:
    make_root(tmp_path, SHORT)
    write_blobs(tmp_path, "all", 240, seed=1)
    args = ["--CreateShards-tfrecords", "all-*.tfrecord", "--CreateShards-label-column", "kind"]
    code, out = luigi(tmp_path, "EvaluateEstimator", *args)
    assert code == 0, out[-3000:]
    assert "'tag' holds strings, which the built-in networks do not use" in out
    [shards] = list((tmp_path / "data" / "shards").glob("tfrecords-*"))
    manifest = read_manifest(shards)
    assert manifest["class_names"] == ["high", "low"] and manifest["inputs"] == ["count", "tag", "x"]
    assert {split: s["num_examples"] for split, s in manifest["splits"].items()} == {"train": 160, "validation": 80}
    assert manifest["feature_spec"]["x"] == {"kind": "float", "length": 2}
    report = json.loads(next((tmp_path / "reports").glob("*-eval-*/" + layout.METRICS)).read_text())
    assert report["validation"]["accuracy"] > 0.9  # two well-separated blobs
    # The files' listing is the identity: a file changed (its mtime) makes new shards.
    os.utime(tmp_path / "all-0.tfrecord", ns=(1, 1))
    assert luigi(tmp_path, "CreateShards", *args)[0] == 0
    assert len(list((tmp_path / "data" / "shards").glob("tfrecords-*"))) == 2
    # A split the user has: two globs, kept as they are.
    write_blobs(tmp_path, "train", 100, seed=2)
    write_blobs(tmp_path, "valid", 30, seed=3, files=1)
    given = ["--CreateShards-tfrecords", "train-*.tfrecord", "--CreateShards-tfrecords-validation", "valid-*.tfrecord"]
    assert luigi(tmp_path, "CreateShards", *given, "--CreateShards-label-column", "kind")[0] == 0
    newest = max((tmp_path / "data" / "shards").glob("tfrecords-*"), key=lambda p: p.stat().st_mtime)
    splits = read_manifest(newest)["splits"]
    assert (splits["train"]["num_examples"], splits["validation"]["num_examples"]) == (100, 30)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_corrupt_tfrecord_file_is_named_and_nothing_is_published(tmp_path: Path, damage: str) -> None:
    make_root(tmp_path, SHORT)
    paths = write_blobs(tmp_path, "all", 40, seed=1)
    data = bytearray(paths[1].read_bytes())
    if damage == "truncated":
        data = data[: len(data) - 7]
    else:
        data[len(data) // 2] ^= 0xFF
    paths[1].write_bytes(bytes(data))
    code, out = luigi(tmp_path, "CreateShards", "--CreateShards-tfrecords", "all-*.tfrecord",
                      "--CreateShards-label-column", "kind")  # fmt: skip
    assert code in (30, 40), out[-3000:]
    assert "all-1.tfrecord" in out and "Corrupt TFRecord" in out and "Traceback" not in out
    assert not list((tmp_path / "data" / "shards").glob("tfrecords-*")) if (tmp_path / "data").exists() else True
