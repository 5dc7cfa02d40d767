"""A user's table: `--CreateShards-csv FILE --CreateShards-label-column NAME` (pipeline/etl/tables.py, sources.py).

Real public tables (scikit-learn ships them: no download) are written as CSV
files, as a user would have them, and run through the whole DAG; the model is
compared with a scaled linear baseline fitted on the very same split.
"""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import numpy as np
import pytest
from luigi.task_register import Register

from bench.tables import baseline, diabetes, read_split, wine, write_csv
from pipeline import layout
from pipeline.etl import tables
from pipeline.evaluation import figures
from pipeline.schema import read_manifest
from pipeline.tasks import CreateShards, EvaluateEstimator, PlotInference, TrainEstimator
from tests.conftest import PROJECT_DIR, SMALL_TRAINING, Config, build, make_root, run_cli

# --- reading and checking ------------------------------------------------------------------------


def test_labels_decide_the_problem(tmp_path: Path) -> None:
    rows = [[1.5, 10, "cat"], [2.5, 20, "dog"], [3.5, 30, "cat"]]
    table = tables.read_table(write_csv(tmp_path / "a.csv", ["w", "h", "kind"], rows), "kind")
    assert (table.problem, table.class_names, table.feature_columns) == ("classification", ("cat", "dog"), ("w", "h"))
    assert table.cells == (("1.5", "10"), ("2.5", "20"), ("3.5", "30")) and table.lines == (2, 3, 4)
    numbers = write_csv(tmp_path / "b.csv", ["x", "y"], [[1, 10], [2, 2], [3, 10]])
    assert tables.read_table(numbers, "y").problem == "regression"
    as_classes = tables.read_table(numbers, "y", "classification")
    assert as_classes.class_names == ("2", "10")  # integer classes, in numeric order


BAD_TABLES = [
    (["a", "b"], [], "b", "is empty: expected a header line and at least one row"),
    (["a", "b"], [[1, 2]], "label", "has no column 'label' (--CreateShards-label-column). Its columns: a, b"),
    (["a", "a", "y"], [[1, 2, "x"], [1, 3, "z"]], "y", "the header names column 'a' twice"),
    (["a", "y"], [[1, "NA"], [2, ""]], "y", "column 'y' has no value in any row: nothing to learn"),
    (["a", "y"], [[1, "x"], [2]], "y", "line 3: 1 values, the header names 2 columns"),
    (["a", "y"], [[1, "x"], [2, "x"]], "y", "column 'y' holds a single class ('x')"),
]


@pytest.mark.parametrize(("header", "rows", "label", "message"), BAD_TABLES, ids=[m for *_, m in BAD_TABLES])
def test_bad_tables_are_named_with_file_line_and_column(
    tmp_path: Path, header: list[str], rows: list[list[object]], label: str, message: str
) -> None:
    path = write_csv(tmp_path / "t.csv", header, rows)
    with pytest.raises(ValueError, match=r"t\.csv") as error:
        tables.read_table(path, label)
    assert message in str(error.value)


def test_a_bad_table_stops_the_luigi_command_with_exit_40_before_any_work(tmp_path: Path) -> None:
    make_root(tmp_path)
    write_csv(tmp_path / "t.csv", ["a", "y"], [[1, "x"]] * 5 + [[2, "rare"]])
    args = ["--CreateShards-csv", "t.csv", "--CreateShards-label-column", "y"]
    out = run_cli(["luigi", "--module", "pipeline", "PlotInference", "--local-scheduler", *args], cwd=tmp_path)
    assert out.returncode == 40, out.stderr[-2000:]
    assert "Too few rows of class 'rare' (1)" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()


def test_shards_of_a_table_are_split_by_class_and_record_feature_statistics(workspace: Path, config: Config) -> None:
    config.set("CreateShards", "csv", wine(workspace)[0])
    config.set("CreateShards", "label_column", "cultivar")
    Register.clear_instance_cache()
    build(CreateShards())
    manifest = read_manifest(CreateShards().output_dir())
    assert manifest["problem"] == "classification"
    assert manifest["class_names"] == ["class_0", "class_1", "class_2"]
    counts = manifest["class_counts"]
    assert {name: counts["train"][name] + counts["validation"][name] for name in manifest["class_names"]} == {
        "class_0": 59,
        "class_1": 71,
        "class_2": 48,
    }
    for name, total in (("class_0", 59), ("class_1", 71), ("class_2", 48)):
        assert counts["validation"][name] == int(total / 3 + 0.5)  # stratified: a third of each class
    x_train, _ = read_split(CreateShards().output_dir(), "train")
    assert [manifest["columns"][name]["kind"] for name in manifest["inputs"]] == ["numeric"] * 13
    for name in manifest["inputs"]:  # the train split's statistics, which the model's ImputeAndScale layers take
        column = manifest["columns"][name]
        np.testing.assert_allclose(column["mean"], x_train[name].mean(), rtol=1e-5)
        np.testing.assert_allclose(column["variance"], x_train[name].var(), rtol=1e-4)
    assert TrainEstimator().settings().network == "mlp" and TrainEstimator().settings().augment == ()


# --- the whole DAG on real tables ------------------------------------------------------------------


def test_a_real_table_reaches_a_scaled_logistic_regression(workspace: Path, config: Config) -> None:
    """The wine table with luigi.cfg's defaults for the MLP (early stopping, dropout): as good as a scaled
    logistic regression."""
    config.set("CreateShards", "csv", wine(workspace)[0])
    config.set("CreateShards", "label_column", "cultivar")
    project = configparser.ConfigParser()
    project.read(PROJECT_DIR / "luigi.cfg")
    for option in SMALL_TRAINING:  # the workspace's short settings: back to the project's luigi.cfg
        config.set("TrainEstimator", option, project["TrainEstimator"][option])
    Register.clear_instance_cache()
    assert build(PlotInference()) == {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"}
    assert TrainEstimator().settings().batch_size == 118  # auto: the whole training split, smaller than 128
    report = json.loads((EvaluateEstimator().output_dir() / layout.METRICS).read_text())
    shards_dir = CreateShards().output_dir()
    baseline_accuracy = baseline(shards_dir, "classification")
    y_val = read_split(shards_dir, "validation")[1]
    print(f"wine: MLP {report['validation']['accuracy']:.4f}, scaled logistic regression {baseline_accuracy:.4f}")
    assert report["validation"]["num_examples"] == len(y_val) == 60
    assert report["validation"]["accuracy"] >= baseline_accuracy
    drawn = {p.name for p in PlotInference().output_dir().glob("*.png")}
    assert drawn == {figures.CONFUSION_PNG, figures.CURVES_PNG}  # no image grid for a table


def test_a_regression_table_gets_predicted_against_true_and_residuals(workspace: Path, config: Config) -> None:
    config.set("CreateShards", "csv", diabetes(workspace)[0])  # raw columns: age in years, sex 1 or 2, serum in mg/dl
    config.set("CreateShards", "label_column", "progression")
    config.set("TrainEstimator", "max_steps", 200)  # before it overfits (see the README)
    Register.clear_instance_cache()
    build(PlotInference())
    report = json.loads((EvaluateEstimator().output_dir() / layout.METRICS).read_text())
    shards_dir = CreateShards().output_dir()
    ridge_mse = baseline(shards_dir, "regression")
    y_val = read_split(shards_dir, "validation")[1]
    print(f"diabetes: MLP MSE {report['validation']['mse']:.1f}, ridge {ridge_mse:.1f}, variance {y_val.var():.1f}")
    assert report["problem"] == "regression" and report["validation"]["mse"] < 0.75 * float(y_val.var())
    drawn = {p.name for p in PlotInference().output_dir().glob("*.png")}
    assert drawn == {figures.PREDICTED_VS_TRUE_PNG, figures.CURVES_PNG}  # no curve along one input: ten inputs


def test_a_table_edited_after_the_task_was_built_is_sharded_as_it_is_when_the_stage_runs(
    workspace: Path, config: Config
) -> None:
    rows: list[list[object]] = [[i, i % 7, "even" if i % 2 == 0 else "odd"] for i in range(30)]
    table = write_csv(workspace / "t.csv", ["a", "b", "kind"], rows)
    config.set("CreateShards", "csv", table)
    config.set("CreateShards", "label_column", "kind")
    Register.clear_instance_cache()
    task = CreateShards()  # scheduled: the table has 30 rows
    write_csv(table, ["a", "b", "kind"], [*rows, *([i, 1, "odd"] for i in range(30, 45))])  # then 45
    build(task)
    Register.clear_instance_cache()
    manifest = read_manifest(CreateShards().output_dir())
    assert sum(split["num_examples"] for split in manifest["splits"].values()) == 45
