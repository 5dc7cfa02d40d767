"""How good is the default MLP on real tables? Prints figures; asserts nothing.

Writes scikit-learn's bundled public tables as CSV files, as a user would have
them (no download), runs the whole DAG on each with luigi.cfg's defaults
(`--CreateShards-csv FILE --CreateShards-label-column NAME`, nothing else), and
fits a scaled linear baseline on the very same split, read back from the
shards: a logistic regression for classes, a ridge regression for a number.

    .venv/bin/python -m bench.tables [--tables wine breast_cancer diabetes] [--patience N]

`--patience N` runs the MLP with early stopping as well (a second model).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import pipeline
from bench.common import build, machine, workspace
from pipeline import layout
from pipeline.schema import read_manifest
from pipeline.training import inputs


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def wine(folder: Path) -> tuple[Path, str]:
    from sklearn.datasets import load_wine

    data = load_wine()  # 178 rows, 13 columns from 0.13 to 1680, three cultivars
    rows = [[*x, data.target_names[y]] for x, y in zip(data.data, data.target, strict=True)]
    return write_csv(folder / "wine.csv", [*data.feature_names, "cultivar"], rows), "cultivar"


def breast_cancer(folder: Path) -> tuple[Path, str]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()  # 569 rows, 30 columns from 0.0008 to 4254, two diagnoses
    rows = [[*x, data.target_names[y]] for x, y in zip(data.data, data.target, strict=True)]
    return write_csv(folder / "breast_cancer.csv", [*data.feature_names, "diagnosis"], rows), "diagnosis"


def diabetes(folder: Path) -> tuple[Path, str]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)  # 442 rows, 10 raw columns (age in years, sex 1 or 2, serum in mg/dl)
    rows = [[*x, y] for x, y in zip(data.data, data.target, strict=True)]
    return write_csv(folder / "diabetes.csv", [*data.feature_names, "progression"], rows), "progression"


TABLES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "wine": wine,
    "breast_cancer": breast_cancer,
    "diabetes": diabetes,
}


def read_split(shards_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split of the shards as arrays: the features, and the labels flattened."""
    manifest = read_manifest(shards_dir)
    batches = list(inputs.eval_dataset(shards_dir, manifest, split, 512))
    return np.concatenate([x.numpy() for x, _ in batches]), np.concatenate([y.numpy() for _, y in batches]).ravel()


def baseline(shards_dir: Path, problem: str) -> float:
    """The scaled linear model's validation accuracy (classes) or MSE (a number) on the same split."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_val, y_val) = read_split(shards_dir, "train"), read_split(shards_dir, "validation")
    if problem == "classification":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_train, y_train)
        return float((model.predict(x_val) == y_val).mean())
    ridge = make_pipeline(StandardScaler(), Ridge()).fit(x_train, y_train)
    return float(np.mean((ridge.predict(x_val) - y_val) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tables", nargs="+", choices=sorted(TABLES), default=list(TABLES))
    parser.add_argument("--patience", type=int, default=0, help="also train with early stopping (evaluations)")
    args = parser.parse_args()
    print(machine())
    print(f"{'table':14} {'rows':>5} {'problem':15} {'metric':9} {'MLP':>9} {'patience':>9} {'linear':>9}  verdict")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            root = Path(tmp) / name
            root.mkdir()
            csv_path, label = TABLES[name](root)
            rows = len(csv_path.read_text().splitlines()) - 1
            scores = []
            for patience in [0, args.patience] if args.patience else [0]:
                source = {"csv": csv_path, "label_column": label}
                with workspace(root, CreateShards=source, TrainEstimator={"patience": patience}):
                    build(pipeline.PlotInference())
                    report = json.loads((pipeline.EvaluateEstimator().output_dir() / layout.METRICS).read_text())
                    shards_dir = pipeline.CreateShards().output_dir()
                problem = report["problem"]
                metric = "accuracy" if problem == "classification" else "mse"
                scores.append(float(report["validation"][metric]))
            linear = baseline(shards_dir, problem)
            better = (max if metric == "accuracy" else min)(scores)
            reaches = better >= linear if metric == "accuracy" else better <= linear
            early = f"{scores[1]:9.4g}" if len(scores) > 1 else f"{'-':>9}"
            print(
                f"{name:14} {rows:5d} {problem:15} {metric:9} {scores[0]:9.4g} {early} {linear:9.4g}  "
                f"{'reaches the linear model' if reaches else 'below the linear model'}"
            )


if __name__ == "__main__":
    main()
