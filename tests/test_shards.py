"""The sine source and the TFRecord shards (pipeline/etl/sources.py, pipeline/etl/shards.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import layout
from pipeline.etl import shapes, shards, sources
from pipeline.training import inputs
from tests.conftest import VENV_BIN, make_root


def test_sine_source_is_the_seed_experiment() -> None:
    src = sources.SineSource()
    splits = src.splits()
    assert len(splits["train"]["x"]) == 683 and len(splits["validation"]["x"]) == 341
    x = np.concatenate([splits["train"]["x"], splits["validation"]["x"]])
    np.testing.assert_allclose(np.sort(x), np.linspace(-4 * np.pi, 4 * np.pi, 1024), rtol=1e-6)
    val = splits["validation"]
    residual = val["y"] - sources.true_function(val["x"])
    # The noise is N(0, 0.1^2) drawn from RandomState(1234): the true function
    # scores about 0.0099 on the validation points, as in the seed experiment.
    assert abs(float(np.mean(residual**2)) - 0.00988) < 5e-5
    assert abs(float(np.std(residual)) - 0.1) < 0.01


def test_encode_example_is_what_tensorflow_parses() -> None:
    features: dict[str, Any] = {"x": [1.5], "y": [-2.25, 3.0], "label": [7, -1], "image": [b"\x00\xffabc"]}
    example = tf.train.Example.FromString(shards.encode_example(features))
    f = example.features.feature
    assert list(f["x"].float_list.value) == [1.5]
    assert list(f["y"].float_list.value) == [-2.25, 3.0]
    assert list(f["label"].int64_list.value) == [7, -1]
    assert list(f["image"].bytes_list.value) == [b"\x00\xffabc"]
    # Features sorted by name make the bytes what a deterministic protobuf writes.
    assert shards.encode_example(features) == example.SerializeToString(deterministic=True)


def _create(folder: Path, processes: int, **kwargs: object) -> dict:
    src = sources.SineSource(**kwargs)  # type: ignore[arg-type]
    return shards.create_shards(folder, src, {"train": 3, "validation": 2}, processes=processes)


def _digest_tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_shards_round_trip_through_tensorflow(tmp_path: Path) -> None:
    manifest = _create(tmp_path, processes=2)
    assert manifest["splits"]["train"]["num_examples"] == 683
    assert [len(layout.shard_files(tmp_path, s)) for s in layout.SPLITS] == [3, 2]
    expected = sources.SineSource().splits()
    for split in layout.SPLITS:
        files = [str(p) for p in layout.shard_files(tmp_path, split)]
        spec = {"x": tf.io.FixedLenFeature([1], tf.float32), "y": tf.io.FixedLenFeature([1], tf.float32)}
        parsed = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files)]
        x = np.array([p["x"].numpy()[0] for p in parsed])
        y = np.array([p["y"].numpy()[0] for p in parsed])
        np.testing.assert_array_equal(x, expected[split]["x"])
        np.testing.assert_array_equal(y, expected[split]["y"])
        # The plain reader verifies the same framing and CRCs.
        assert sum(len(shards.read_records(Path(f))) for f in files) == len(x)


@pytest.mark.parametrize("in_memory", [True, False])
def test_train_stream_sees_every_example_once_an_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    manifest = _create(tmp_path, processes=1)
    if not in_memory:  # a split above the limit streams through the shuffle buffer
        monkeypatch.setattr(inputs, "IN_MEMORY_BYTES", 0)
    assert (inputs.parsed_bytes(manifest, "train") <= inputs.IN_MEMORY_BYTES) == in_memory
    train_x = np.sort(sources.SineSource().splits()["train"]["x"])
    # Batches of 683: one an epoch; the order is new every epoch and a function of the seed.
    stream = [x.numpy().ravel() for x, _ in inputs.train_dataset(tmp_path, manifest, 683, 3, 1024).take(3)]
    for epoch in stream:
        np.testing.assert_array_equal(np.sort(epoch), train_x)
    assert not np.array_equal(stream[0], stream[1])
    resumed = [x.numpy().ravel() for x, _ in inputs.train_dataset(tmp_path, manifest, 683, 3, 1024, 1).take(2)]
    for a, b in zip(stream[1:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_same_parameters_same_bytes(tmp_path: Path) -> None:
    _create(tmp_path / "a", processes=1)
    _create(tmp_path / "b", processes=2)
    _create(tmp_path / "c", processes=2, seed=1)
    assert _digest_tree(tmp_path / "a") == _digest_tree(tmp_path / "b")
    assert _digest_tree(tmp_path / "a") != _digest_tree(tmp_path / "c")


def test_too_many_shards_is_refused_before_writing(tmp_path: Path) -> None:
    src = sources.SineSource(num_examples=10)
    with pytest.raises(ValueError, match="validation split has 3 examples"):
        shards.create_shards(tmp_path, src, {"train": 2, "validation": 4})
    assert not any(tmp_path.iterdir())


def test_corrupt_record_is_detected(tmp_path: Path) -> None:
    _create(tmp_path, processes=1)
    shard = layout.shard_files(tmp_path, "train")[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Corrupt TFRecord"):
        shards.read_records(shard)


def test_a_killed_etl_leaves_no_writer_process_behind(tmp_path: Path) -> None:
    """SIGKILL on the stage: its forkserver, writers and resource tracker die with it (etl/forkserver_init.py)."""
    folder = tmp_path / "pictures"
    for name in ("circle", "square"):
        (folder / name).mkdir(parents=True)
        for i in range(400):
            Image.fromarray(shapes.draw_shape(name, 48, seed=1, index=i)).save(folder / name / f"{i}.png")
    make_root(tmp_path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [str(VENV_BIN / "luigi"), "--module", "pipeline", "CreateShards", "--local-scheduler"]
    stage = subprocess.Popen(
        [*command, "--CreateShards-image-dir", str(folder)], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    helpers: list[psutil.Process] = []
    deadline = time.monotonic() + 60
    while stage.poll() is None and time.monotonic() < deadline:
        children = psutil.Process(stage.pid).children(recursive=True)
        if any("forkserver" in " ".join(child.cmdline()) for child in children) and len(children) >= 3:
            helpers = children
            break
        time.sleep(0.01)
    assert helpers, "the ETL ended before its writer processes were seen"
    stage.kill()
    stage.wait()
    gone, alive = psutil.wait_procs(helpers, timeout=10)
    assert alive == [], [" ".join(p.cmdline())[:80] for p in alive]
    assert len(gone) == len(helpers)
