"""How good is the default MLP on real tables? Prints figures; asserts nothing.

Writes scikit-learn's bundled public tables as CSV files, as a user would have
them (no download), copies the Palmer penguins tables as the palmerpenguins
package ships them (text columns, missing values, ids, dates), runs the whole
DAG on each with luigi.cfg's defaults (`--CreateShards-csv FILE
--CreateShards-label-column NAME`, nothing else), and fits a linear baseline on
the very same split, read back from the shards: scikit-learn's one-hot
encoding, mean imputation with missing indicators and scaling of the columns
the pipeline uses, then a logistic regression for classes, a ridge regression
for a number.

    .venv/bin/python -m bench.tables [--tables wine breast_cancer diabetes penguins penguins_raw penguins_mass]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import shutil
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


def penguins_file(name: str) -> Path:
    """A CSV file the palmerpenguins package ships (found without importing it: it imports pandas)."""
    spec = importlib.util.find_spec("palmerpenguins")
    if spec is None or spec.origin is None:
        raise RuntimeError("palmerpenguins is not installed: make setup installs it (the dev extra).")
    return Path(spec.origin).parent / "data" / name


def penguins(folder: Path) -> tuple[Path, str]:
    """Palmer penguins as shipped: text columns (island, sex), NA cells in five columns; 344 rows, 3 species."""
    return Path(shutil.copy(penguins_file("penguins.csv"), folder / "penguins.csv")), "species"


def penguins_raw(folder: Path) -> tuple[Path, str]:
    """The raw penguins table: 17 columns with ids, dates, constant columns, free-text comments and NA cells."""
    return Path(shutil.copy(penguins_file("penguins-raw.csv"), folder / "penguins_raw.csv")), "Species"


def penguins_mass(folder: Path) -> tuple[Path, str]:
    """Regression on the penguins table: the body mass, missing in 2 rows (left out, counted)."""
    return Path(shutil.copy(penguins_file("penguins.csv"), folder / "penguins_mass.csv")), "body_mass_g"


TABLES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "wine": wine,
    "breast_cancer": breast_cancer,
    "diabetes": diabetes,
    "penguins": penguins,
    "penguins_raw": penguins_raw,
    "penguins_mass": penguins_mass,
}


def read_split(shards_dir: Path, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A split of a table's shards as raw columns (by feature name), and the labels flattened."""
    manifest = read_manifest(shards_dir)
    batches = list(inputs.eval_dataset(shards_dir, manifest, split, 512))
    columns = {name: np.concatenate([x[name].numpy() for x, _ in batches]) for name in manifest["inputs"]}
    return columns, np.concatenate([y.numpy() for _, y in batches]).ravel()


def linear_features(manifest: dict[str, Any], train: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> Any:
    """scikit-learn's one-hot + mean imputation (with missing indicators) + scaling, fitted on `train`,
    applied to both: the features a linear model takes."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    kinds = {name: manifest["columns"][name]["kind"] for name in manifest["inputs"]}
    numeric = [name for name, kind in kinds.items() if kind == "numeric"]
    categorical = [name for name, kind in kinds.items() if kind == "categorical"]

    def table(data: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([data[name].astype(object) for name in numeric + categorical], axis=1)

    numbers = make_pipeline(SimpleImputer(strategy="mean", add_indicator=True), StandardScaler())
    transformer = ColumnTransformer(
        [
            ("numeric", numbers, list(range(len(numeric)))),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(range(len(numeric), len(kinds)))),
        ]
    )
    return transformer.fit_transform(table(train)), transformer.transform(table(other))


def baseline(shards_dir: Path, problem: str) -> float:
    """The linear model's validation accuracy (classes: logistic regression) or MSE (a number: ridge
    regression), on one-hot + imputation + scaling of the same split."""
    from sklearn.linear_model import LogisticRegression, Ridge

    manifest = read_manifest(shards_dir)
    (train, y_train), (validation, y_val) = read_split(shards_dir, "train"), read_split(shards_dir, "validation")
    x_train, x_val = linear_features(manifest, train, validation)
    if problem == "classification":
        model = LogisticRegression(max_iter=5000).fit(x_train, y_train)
        return float((model.predict(x_val) == y_val).mean())
    ridge = Ridge().fit(x_train, y_train)
    return float(np.mean((ridge.predict(x_val) - y_val) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tables", nargs="+", choices=sorted(TABLES), default=list(TABLES))
    args = parser.parse_args()
    print(machine())
    print(
        f"{'table':14} {'rows':>5} {'columns (numeric/categorical/ignored)':>38} {'problem':15} {'metric':9} "
        f"{'MLP':>9} {'linear':>9} {'MLP/linear':>10}  verdict"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            root = Path(tmp) / name
            root.mkdir()
            csv_path, label = TABLES[name](root)
            rows = len(csv_path.read_text().splitlines()) - 1
            with workspace(root, CreateShards={"csv": csv_path, "label_column": label}):
                build(pipeline.PlotInference())
                report = json.loads((pipeline.EvaluateEstimator().output_dir() / layout.METRICS).read_text())
                shards_dir = pipeline.CreateShards().output_dir()
            problem = report["problem"]
            metric = "accuracy" if problem == "classification" else "mse"
            score = float(report["validation"][metric])
            linear = baseline(shards_dir, problem)
            kinds = [c["kind"] for c in read_manifest(shards_dir)["columns"].values()]
            counts = "/".join(str(kinds.count(kind)) for kind in ("numeric", "categorical", "ignore"))
            # Within 10 %: an accuracy at least 0.9 of the linear model's, an MSE at most 1.1 of its.
            ratio = score / linear
            within = ratio >= 0.9 if metric == "accuracy" else ratio <= 1.1
            reaches = score >= linear if metric == "accuracy" else score <= linear
            verdict = "reaches the linear model" if reaches else "within 10 %" if within else "more than 10 % worse"
            print(
                f"{name:14} {rows:5d} {counts:>38} {problem:15} {metric:9} {score:9.4g} {linear:9.4g} {ratio:10.3f}  "
                f"{verdict}"
            )


if __name__ == "__main__":
    main()
