"""Image bytes and large numbers from a source of the user's or TFRecords, with the built-in networks.

Image bytes (a PNG string) are decoded inside the model (training/preprocessing.py's DecodeImages) for the
built-in cnn, the numbers beside them joined after its pooling; numbers are standardised inside the model
from the train split's statistics, which CreateShards records in the manifest. Each command runs in a
fresh folder that is its own artifact root.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import layout
from pipeline.schema import read_manifest
from tests.conftest import make_root, run_cli

SHORT = "[TrainEstimator]\nmax_steps = 200\ncheckpoint_steps = 100\nbatch_size = 64\n"
SOURCES = '''
import io

import numpy as np
from PIL import Image


def png(level):
    """An 8x8 gray image around `level` (0-255), with noise."""
    rng = np.random.default_rng(int(level * 1000))
    pixels = np.clip(level + rng.normal(0, 10, (8, 8)), 0, 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def image_and_number(n=1000, seed=0):
    """Class 1 when the image's brightness and the number, each in [0, 1], add up to more than 1."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        brightness, number = rng.uniform(size=2)
        yield {"picture": png(40 + 170 * brightness), "reading": float(number * 1000 + 5000),
               "y": int(brightness + number > 1)}


def large_numbers(n=600, seed=0):
    """Class 1 when u, in [0, 1], is in its middle half; x = u * 1000 + 5000 and a second number near 0."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        u, v = rng.uniform(size=2)
        yield {"x": float(u * 1000 + 5000), "z": np.array([v, -v], "float32"), "y": int(0.25 < u < 0.75)}
'''


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_root(tmp_path, SHORT)
    (tmp_path / "image_sources.py").write_text(SOURCES)
    return tmp_path


def luigi(folder: Path, *args: str) -> tuple[int, str]:
    out = run_cli(["luigi", "--module", "pipeline", "EvaluateEstimator", "--local-scheduler", *args], cwd=folder)
    return out.returncode, out.stdout + out.stderr


def accuracy(folder: Path) -> float:
    report = json.loads(next((folder / "reports").glob("*-eval-*/" + layout.METRICS)).read_text())
    return float(report["validation"]["accuracy"])


def manifest(folder: Path) -> dict:
    [made] = sorted((folder / "data" / "shards").glob("*-*"))
    return read_manifest(made)


def test_an_image_and_a_number_from_a_source_train_the_default_cnn(folder: Path) -> None:
    code, out = luigi(
        folder,
        "--CreateShards-source",
        "image_sources:image_and_number",
        "--CreateShards-label-column",
        "y",
    )
    assert code == 0, out[-3000:]
    made = manifest(folder)
    picture = {"dtype": "string", "shape": [], "encoding": "image", "image_shape": [8, 8, 1]}  # gray: one channel
    assert made["features"]["picture"] == picture
    assert made["columns"]["picture"]["kind"] == "image"
    reading = made["columns"]["reading"]
    assert reading["kind"] == "numeric" and 5400 < reading["mean"] < 5600 and 60_000 < reading["variance"] < 110_000
    config = json.loads(next((folder / "models").glob("*/" + layout.TRAIN_CONFIG)).read_text())["config"]
    assert config["network"] == "cnn" and config["augment"] == []
    # The brightness alone, or the number alone, is right 3/4 of the time: more needs both inputs.
    assert accuracy(folder) > 0.85
    # The export takes what a client has: the PNG's bytes and the raw number.
    import tensorflow as tf

    [export] = (folder / "models").glob("*/saved_model")
    serve = tf.saved_model.load(str(export)).signatures["raw"]  # by name, each feature as the source yields it
    images = tf.constant([png(40 + 170 * 0.9), png(40 + 170 * 0.1)])
    served = serve(picture=images, reading=tf.constant([0.9 * 1000 + 5000, 0.1 * 1000 + 5000]))
    assert served["probabilities"].numpy().argmax(axis=1).tolist() == [1, 0]  # bright and high; dark and low
    assert served["class_ids"].numpy().tolist() == [1, 0]


def png(level: float) -> bytes:
    """An 8x8 gray PNG at `level` (0-255), as the source's."""
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8), round(level), "uint8"), mode="L").save(out, format="PNG")
    return out.getvalue()


def write_records(path: Path, count: int, seed: int) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(count):
            bright = int(rng.integers(2))
            pixels = np.clip((170 if bright else 70) + rng.normal(0, 30, (8, 8, 3)), 0, 255).astype("uint8")
            data = io.BytesIO()
            Image.fromarray(pixels).save(data, format="PNG")
            feature = {
                "encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data.getvalue()])),
                "class": tf.train.Feature(int64_list=tf.train.Int64List(value=[bright])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_tfrecords_of_encoded_images_train_the_default_cnn(folder: Path) -> None:
    write_records(folder / "images.tfrecord", 300, seed=1)
    code, out = luigi(folder, "--CreateShards-tfrecords", "images.tfrecord", "--CreateShards-label-column", "class")
    assert code == 0, out[-3000:]
    made = manifest(folder)
    assert made["features"]["encoded"]["encoding"] == "image" and made["input_shape"] == [8, 8, 3]
    assert accuracy(folder) > 0.95  # bright against dark: chance is 1/2


def test_large_numbers_are_standardised_inside_the_default_mlp(folder: Path) -> None:
    code, out = luigi(
        folder, "--CreateShards-source", "image_sources:large_numbers", "--CreateShards-label-column", "y"
    )
    assert code == 0, out[-3000:]
    columns = manifest(folder)["columns"]
    assert round(columns["x"]["mean"], -2) == 5500 and round(columns["x"]["variance"], -4) == 80_000
    assert [round(v, 1) for v in columns["z"]["mean"]] == [0.5, -0.5]  # per value of an array
    # Unscaled, ReLU's kinks stay near x = 0, far from 5000-6000: a straight line, about 0.5 (measured 0.505).
    assert accuracy(folder) > 0.85
