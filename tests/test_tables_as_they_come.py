"""Real tables as they come: text columns, missing values, ids and dates (pipeline/etl/tables.py, columns.py,
training/preprocessing.py), on the Palmer penguins tables as the palmerpenguins package ships them."""

from __future__ import annotations

import configparser
import csv
import json
import logging
import textwrap
from pathlib import Path

import pytest
from luigi.task_register import Register

from bench.tables import baseline, penguins, penguins_mass, penguins_raw
from pipeline import layout
from pipeline.schema import read_manifest
from pipeline.tasks import CreateShards, EvaluateEstimator, PlotInference, TrainEstimator
from tests.conftest import PROJECT_DIR, SMALL_TRAINING, Config, build, run_cli


def use_table(config: Config, path: Path, label: str, **options: str) -> None:
    config.set("CreateShards", "csv", path)
    config.set("CreateShards", "label_column", label)
    for option, value in options.items():
        config.set("CreateShards", option, value)
    Register.clear_instance_cache()


def test_the_raw_penguins_table_gets_a_kind_per_column_from_the_train_split(workspace: Path, config: Config) -> None:
    use_table(config, *penguins_raw(workspace))
    build(CreateShards())
    manifest = read_manifest(CreateShards().output_dir())
    kinds = {column["column"]: column["kind"] for column in manifest["columns"].values()}
    assert {name for name, kind in kinds.items() if kind == "ignore"} == {
        "Region", "Stage", "Individual ID", "Date Egg"  # constant, constant, nearly unique text, dates
    }  # fmt: skip
    assert {name for name, kind in kinds.items() if kind == "categorical"} == {
        "studyName", "Island", "Clutch Completion", "Sex", "Comments"
    }  # fmt: skip
    columns = {column["column"]: column for column in manifest["columns"].values()}
    assert "dates" in columns["Date Egg"]["reason"] and "same value" in columns["Region"]["reason"]
    sex = dict(map(tuple, columns["Sex"]["vocabulary"]))
    assert sex[""] == columns["Sex"]["missing"] > 0  # missing: a category of its own, counted
    assert columns["Delta 15 N (o/oo)"]["missing"] > 0 and columns["Delta 15 N (o/oo)"]["kind"] == "numeric"
    assert set(manifest["inputs"]) == {f for f, c in manifest["columns"].items() if c["kind"] != "ignore"}
    width = sum(
        (2 if c["missing"] else 1) if c["kind"] == "numeric" else len(c["vocabulary"]) + 1
        for c in manifest["columns"].values()
        if c["kind"] != "ignore"
    )
    assert manifest["input_shape"] == [width] and CreateShards().schema().input_shape == (width,)


def test_rows_without_a_label_are_left_out_counted_and_named_by_line(
    workspace: Path, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    path, label = penguins_mass(workspace)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        unlabelled = [reader.line_num for row in reader if row[label] == "NA"]
    assert len(unlabelled) == 2  # the file as shipped
    use_table(config, path, label)
    source = CreateShards().example_source
    with caplog.at_level(logging.WARNING, logger="luigi-interface"):
        source.check()
    assert f"2 row(s) of {path} have no 'body_mass_g' and are left out" in caplog.text
    assert f"line {unlabelled[0]}, {unlabelled[1]}" in caplog.text
    build(CreateShards())
    manifest = read_manifest(CreateShards().output_dir())
    assert manifest["problem"] == "regression"
    assert manifest["unlabelled"] == {"count": 2, "lines": unlabelled}
    assert sum(split["num_examples"] for split in manifest["splits"].values()) == 344 - 2


def test_column_overrides_and_the_tables_bytes_are_part_of_the_shards_identity(workspace: Path, config: Config) -> None:
    path, label = penguins(workspace)
    use_table(config, path, label)
    plain = CreateShards().identity().digest
    use_table(config, path, label, columns='{"year": "categorical", "island": "ignore"}')
    overridden = CreateShards()
    assert overridden.identity().digest != plain
    build(overridden)
    columns = read_manifest(CreateShards().output_dir())["columns"]
    assert (columns["year"]["kind"], columns["island"]["kind"]) == ("categorical", "ignore")
    assert sorted(value for value, _ in columns["year"]["vocabulary"]) == ["2007", "2008", "2009"]
    use_table(config, path, label, columns="{}")
    assert CreateShards().identity().digest == plain  # changed back: the same shards
    path.write_text(path.read_text().replace("Torgersen,39.1", "Torgersen,39.2", 1))
    Register.clear_instance_cache()
    assert CreateShards().identity().digest != plain


def test_a_table_with_text_and_missing_values_reaches_one_hot_imputation_and_a_linear_model(
    workspace: Path, config: Config
) -> None:
    """Penguins with luigi.cfg's defaults; then the exported model, in a fresh process, takes raw columns."""
    use_table(config, *penguins(workspace))
    project = configparser.ConfigParser()
    project.read(PROJECT_DIR / "luigi.cfg")
    for option in SMALL_TRAINING:  # the workspace's short settings: back to the project's luigi.cfg
        config.set("TrainEstimator", option, project["TrainEstimator"][option])
    Register.clear_instance_cache()
    build(PlotInference())
    settings = TrainEstimator().settings()
    assert settings.patience == 20 and settings.network_args["dropout"] == 0.5  # the table defaults
    assert settings.checkpoint_steps == 2  # one epoch: 229 training rows in batches of 128
    report = json.loads((EvaluateEstimator().output_dir() / layout.METRICS).read_text())
    linear = baseline(CreateShards().output_dir(), "classification")
    print(
        f"penguins: MLP accuracy {report['validation']['accuracy']:.4f}, one-hot + imputation + logistic {linear:.4f}"
    )
    assert report["validation"]["accuracy"] >= linear
    script = textwrap.dedent(
        f"""
        import json, keras, numpy as np, tensorflow as tf
        model = keras.saving.load_model({str(TrainEstimator().output_dir() / layout.KERAS_MODEL)!r},
                                        custom_objects={{"pipeline>ImputeAndScale": __import__(
                                            "pipeline.training.preprocessing", fromlist=["x"]).ImputeAndScale}})
        rows = {{  # a Gentoo of the file; then an island never seen, a missing bill and a missing sex
            "island": ["Biscoe", "Atlantis"], "bill_length_mm": [46.1, float("nan")],
            "bill_depth_mm": [13.2, 18.0], "flipper_length_mm": [211.0, 190.0], "body_mass_g": [4500.0, 3700.0],
            "sex": ["female", ""], "year": [2007.0, 2009.0],
        }}
        inputs = {{name: tf.constant(values) for name, values in rows.items()}}
        layers = sorted({{type(layer).__name__ for layer in model._flatten_layers()}})
        print(json.dumps({{"p": np.asarray(model(inputs)).tolist(), "layers": layers}}))
        """
    )
    out = run_cli(["python", "-c", script], cwd=workspace)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"ImputeAndScale", "StringLookup"} <= set(result["layers"])  # the preprocessing is in the model
    gentoo, unseen = result["p"]
    assert max(range(3), key=lambda k: gentoo[k]) == read_manifest(CreateShards().output_dir())["class_names"].index(
        "Gentoo"
    )
    assert sum(unseen) == pytest.approx(1.0, abs=1e-5) and all(0 <= p <= 1 for p in unseen)
