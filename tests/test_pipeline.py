"""The whole DAG through Luigi: runs, reruns only what changed, and the results."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from pipeline import layout
from pipeline.evaluation import evaluate, figures
from pipeline.tasks import CreateShards, EvaluateEstimator, PlotInference, TrainEstimator
from tests.conftest import SMALL_TRAINING, VENV_BIN, Config, build, make_root, run_cli

ALL = {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"}
SMALL_CONFIG = "[TrainEstimator]\n" + "".join(f"{k} = {v}\n" for k, v in SMALL_TRAINING.items())


def test_import_pipeline_imports_no_tensorflow() -> None:
    heavy = "('tensorflow', 'keras', 'matplotlib', 'numpy', 'PIL')"  # nothing the scheduling path does not need
    code = f"import sys, pipeline; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = run_cli(["python", "-c", code], cwd=Path.cwd())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_default_run_from_the_command_line(tmp_path: Path) -> None:
    """`luigi --module pipeline PlotInference` with luigi.cfg's defaults: the seed experiment, done well."""
    make_root(tmp_path)
    first = run_cli(["luigi", "--module", "pipeline", "PlotInference", "--local-scheduler"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "4 ran successfully" in first.stderr
    # 6000 steps of 128 on 683 examples: the budget is worth a warning.
    assert "6000 steps of 128 examples are 1124 epochs of the 683 training examples (over 100)" in first.stderr

    (metrics_dir,) = (tmp_path / "reports").glob("sine-mlp-eval-*")
    metrics = json.loads((metrics_dir / layout.METRICS).read_text())
    assert metrics["validation"]["num_examples"] == 341 and metrics["train"]["num_examples"] == 683
    assert metrics["validation"]["mse"] <= 0.011  # the true function scores 0.0099 here
    assert metrics["validation"]["rmse"] == pytest.approx(metrics["validation"]["mse"] ** 0.5, rel=1e-5)

    (plots_dir,) = (tmp_path / "reports").glob("sine-mlp-plots-*")
    for name in (figures.PREDICTIONS_PNG, figures.CURVES_PNG):
        image = matplotlib.image.imread(plots_dir / name)
        assert image.shape[0] >= 400 and image.shape[1] >= 600
        assert image[..., :3].std() > 0.05  # not a blank canvas

    second = run_cli(["luigi", "--module", "pipeline", "PlotInference", "--local-scheduler"], cwd=tmp_path)
    assert second.returncode == 0
    assert "Did not run any tasks" in second.stderr
    assert f"mse {metrics['validation']['mse']:.4g}" in second.stdout  # the results, reused
    assert "Ran: nothing. Reused: CreateShards, TrainEstimator, EvaluateEstimator, PlotInference." in second.stdout

    status = run_cli(["python", "-m", "pipeline", "status", "PlotInference"], cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("up to date") == 4

    # A command-line override reaches the upstream stage, and status says what changed.
    override = ["--TrainEstimator-learning-rate", "0.003"]
    status = run_cli(["python", "-m", "pipeline", "status", "PlotInference", *override], cwd=tmp_path)
    assert status.returncode == 1  # something is stale
    lines = status.stdout.splitlines()
    assert lines[0] == f"Artifact root: {tmp_path}"
    assert lines[1].split()[:4] == ["CreateShards", "up", "to", "date"]
    assert lines[2].split()[:2] == ["TrainEstimator", "stale"]
    assert "parameter learning_rate changed from 0.01 to 0.003" in status.stdout


def test_naming_train_estimator_runs_only_up_to_training(workspace: Path) -> None:
    assert build(TrainEstimator()) == {"CreateShards", "TrainEstimator"}
    assert not (workspace / "reports").exists()


def test_reruns_only_what_a_parameter_change_touches(workspace: Path, config: Config) -> None:
    assert build(PlotInference()) == ALL
    assert build(PlotInference()) == set()

    config.set("TrainEstimator", "learning_rate", "0.003")
    assert build(PlotInference()) == {"TrainEstimator", "EvaluateEstimator", "PlotInference"}
    assert len([p for p in (workspace / "models").iterdir() if p.is_dir()]) == 2  # beside the old model, not over it

    config.set("TrainEstimator", "learning_rate", "1e-2")  # 0.01, spelled otherwise
    assert build(PlotInference()) == set()


def test_parameters_that_change_nothing_are_not_significant(workspace: Path, config: Config) -> None:
    assert build(TrainEstimator()) == {"CreateShards", "TrainEstimator"}
    config.set("CreateShards", "writer_processes", "1")
    config.set("TrainEstimator", "steps_per_execution", "10")
    assert build(TrainEstimator()) == set()


def test_metrics_are_exact_over_the_whole_set(workspace: Path) -> None:
    build(EvaluateEstimator())
    metrics = json.loads((EvaluateEstimator().output_dir() / layout.METRICS).read_text())
    model_dir, shards_dir = TrainEstimator().output_dir(), CreateShards().output_dir()
    for split in ("validation", "train"):
        p = evaluate.predict(model_dir, shards_dir, split)
        error = p["predictions"].ravel() - p["labels"].ravel()
        assert len(error) == metrics[split]["num_examples"]
        assert metrics[split]["mse"] == pytest.approx(float(np.mean(error**2)), rel=1e-5)
        assert metrics[split]["rmse"] == pytest.approx(float(np.sqrt(np.mean(error**2))), rel=1e-5)
        assert metrics[split]["mae"] == pytest.approx(float(np.mean(np.abs(error))), rel=1e-5)


def test_the_same_command_in_two_projects_at_once_runs_in_both(tmp_path: Path) -> None:
    """Luigi's pid lock keys on the command line, machine-wide: the second of two identical commands
    started while the first ran used to exit 0 having done nothing (luigi.cfg: `no_lock`)."""
    roots = [make_root(tmp_path / name, SMALL_CONFIG) for name in ("first", "second")]
    command = [str(VENV_BIN / "luigi"), "--module", "pipeline", "PlotInference", "--local-scheduler"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    first = subprocess.Popen(command, cwd=roots[0], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not (roots[0] / "models").is_dir() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the first is training: it holds the lock, if there is one, until it exits
    second = subprocess.run(command, cwd=roots[1], env=env, capture_output=True, text=True, timeout=300)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already running" not in second.stdout + second.stderr
    for root in roots:
        assert len(list((root / "reports").glob("sine-mlp-plots-*"))) == 1, sorted(root.rglob("*"))
