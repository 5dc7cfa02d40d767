"""How good are the default networks on a source of the user's and on TFRecords? Prints figures; asserts nothing.

Two of scikit-learn's bundled public datasets (no download), brought in as a user would:

- digits (1797 8x8 gray images, ten classes) by a source function yielding each image as PNG bytes
  (`--CreateShards-source bench_digits:digits`): the default network is the cnn, decoding the bytes
  inside the model;
- breast cancer (569 rows, 30 numbers from 0.0008 to 4254, two diagnoses) as TFRecord files of
  tf.train.Example (`--CreateShards-tfrecords`): the default mlp, the numbers standardised inside the
  model from the manifest's train statistics.

Each runs the whole DAG with luigi.cfg's defaults and nothing else, then fits a scaled logistic
regression on the very same split, read back from the shards (the digits' pixels decoded).

    .venv/bin/python -m bench.sources [--datasets digits breast_cancer]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import pipeline
from bench.common import build, machine, test_packages, workspace
from pipeline import layout
from pipeline.schema import read_manifest
from pipeline.training import inputs

sys.path.append(str(test_packages()))  # scikit-learn

DIGITS_SOURCE = '''
import io

from PIL import Image
from sklearn.datasets import load_digits


def digits():
    """scikit-learn's digits as PNG bytes (gray, 0-16 scaled to 0-255) and their class."""
    data = load_digits()
    for pixels, target in zip(data.images, data.target):
        out = io.BytesIO()
        Image.fromarray((pixels * 255 / 16).round().astype("uint8"), mode="L").save(out, format="PNG")
        yield {"image": out.getvalue(), "digit": int(target)}
'''


def digits(root: Path) -> dict[str, Any]:
    (root / "bench_digits.py").write_text(DIGITS_SOURCE)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH", "")]))
    return {"source": "bench_digits:digits", "label_column": "digit"}


def breast_cancer(root: Path) -> dict[str, Any]:
    import tensorflow as tf
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [name.replace(" ", "_") for name in data.feature_names]
    with tf.io.TFRecordWriter(str(root / "breast_cancer.tfrecord")) as writer:
        for row, target in zip(data.data, data.target, strict=True):
            feature = {
                name: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
                for name, v in zip(names, row, strict=True)
            }
            feature["diagnosis"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(target)]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return {"tfrecords": root / "breast_cancer.tfrecord", "label_column": "diagnosis"}


DATASETS: dict[str, Callable[[Path], dict[str, Any]]] = {"digits": digits, "breast_cancer": breast_cancer}


def read_split(shards_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split of the shards as one row of numbers per example (images decoded, pixels flattened), and labels."""
    from PIL import Image

    manifest = read_manifest(shards_dir)
    batches = list(inputs.eval_dataset(shards_dir, manifest, split, 512))
    columns = []
    for name in manifest["inputs"]:
        values = np.concatenate([x[name].numpy() for x, _ in batches])
        if manifest["features"][name].get("encoding") == "image":
            values = np.stack([np.asarray(Image.open(io.BytesIO(v)), dtype=np.float64).ravel() for v in values])
        columns.append(values.reshape(len(values), -1).astype(np.float64))
    return np.concatenate(columns, axis=1), np.concatenate([y.numpy() for _, y in batches]).ravel()


def baseline(shards_dir: Path) -> float:
    """A scaled logistic regression's validation accuracy on the same split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_val, y_val) = read_split(shards_dir, "train"), read_split(shards_dir, "validation")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_train, y_train)
    return float((model.predict(x_val) == y_val).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    args = parser.parse_args()
    print(machine())
    print(f"{'dataset':14} {'via':10} {'network':8} {'train':>5} {'val':>5} {'default':>8} {'logistic':>8}  verdict")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            root = Path(tmp) / name
            root.mkdir()
            options = DATASETS[name](root)
            with workspace(root, CreateShards=options):
                build(pipeline.EvaluateEstimator())
                report = json.loads((pipeline.EvaluateEstimator().output_dir() / layout.METRICS).read_text())
                shards_dir = pipeline.CreateShards().output_dir()
                network = pipeline.TrainEstimator().settings().network
            manifest = read_manifest(shards_dir)
            score, linear = float(report["validation"]["accuracy"]), baseline(shards_dir)
            counts = [manifest["splits"][split]["num_examples"] for split in ("train", "validation")]
            verdict = "reaches it" if score >= linear else "within 10 %" if score >= 0.9 * linear else "worse"
            print(
                f"{name:14} {manifest['source']:10} {network:8} {counts[0]:5d} {counts[1]:5d} {score:8.4f} "
                f"{linear:8.4f}  {verdict}"
            )


if __name__ == "__main__":
    main()
