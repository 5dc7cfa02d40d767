"""`python -m pipeline sweep`: a grid of variants in one Luigi invocation (experiments/sweep.py, Stage.variant)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ParameterError
from pipeline.experiments import sweep
from pipeline.tasks import CreateShards, PlotInference, TrainEstimator
from tests.conftest import make_root, run_cli
from tests.scheduler import running_luigid, write_run_config


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("0.01,0.003", ["0.01", "0.003"]),
        ("[100, 100]", ["[100, 100]"]),
        ("[64],[128, 128]", ["[64]", "[128, 128]"]),
        ('{"width": 64, "depth": 2},{"width": 8}', ['{"width": 64, "depth": 2}', '{"width": 8}']),
        ('"a,b",c', ['"a,b"', "c"]),
        ("0.01", ["0.01"]),
    ],
)
def test_top_level_commas_separate_values(text: str, values: list[str]) -> None:
    assert sweep.split_top_level(text) == values


def test_the_grid_is_every_combination_and_shared_stages_are_one_task(workspace: Path) -> None:
    argv = [
        "PlotInference",
        "--TrainEstimator-learning-rate", "0.01,0.003",
        "--TrainEstimator-seed", "1,2",
        "--TrainEstimator-hidden-units", "[64],[128, 128]",
        "--TrainEstimator-batch-size", "32",  # one value: Luigi's own flag, as with `luigi`
        "--workers", "2",
    ]  # fmt: skip
    target, axes, passthrough = sweep.parse(argv)
    assert target is PlotInference
    assert [(a.family, a.name, a.values) for a in axes] == [
        ("TrainEstimator", "learning_rate", (0.01, 0.003)),
        ("TrainEstimator", "seed", (1, 2)),
        ("TrainEstimator", "hidden_units", ((64,), (128, 128))),
    ]
    assert passthrough == ["PlotInference", "--TrainEstimator-batch-size", "32", "--workers", "2"]
    grid = sweep.variants(axes)
    assert len(grid) == 8 and len({str(v) for v in grid}) == 8
    roots = sweep.tasks(target, grid)
    assert len({root.task_id for root in roots}) == 8
    shards = {root.requires()["shards"] for root in roots}
    models = {root.requires()["model"] for root in roots}
    assert len(shards) == 1 and len(models) == 8  # the shards are one task for every variant
    trained = sorted((m.settings().learning_rate, m.settings().seed, m.settings().network_args["hidden_units"])
                     for m in models)  # fmt: skip
    assert trained[0] == (0.003, 1, (64,)) and trained[-1] == (0.01, 2, (128, 128))
    # A bare stage still reads the command line and luigi.cfg, as `luigi ... PlotInference` does.
    assert PlotInference().requires()["model"] == TrainEstimator() and CreateShards() in shards


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["PlotInference", "--TrainEstimator-learning-rate", "0.01,fast"],
            "--TrainEstimator-learning-rate value 'fast'",
        ),
        (["PlotInference", "--TrainEstimator-seed", "1,2.5"], "--TrainEstimator-seed value '2.5' is not accepted"),
        (["CreateShards", "--TrainEstimator-seed", "1,2"], "TrainEstimator is not a stage of CreateShards's DAG"),
        (["Nonsense", "--TrainEstimator-seed", "1,2"], "sweep: no task 'Nonsense'"),
    ],
)
def test_a_bad_value_names_the_parameter(workspace: Path, argv: list[str], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        sweep.parse(argv)


SWEEP = ["--TrainEstimator-learning-rate", "0.01,0.003", "--TrainEstimator-seed", "1,2"]


def test_a_sweep_against_luigid_runs_the_grid_once_shows_it_and_the_same_sweep_again_runs_nothing(
    tmp_path: Path,
) -> None:
    """The real command against a real luigid with a pool of two GPUs: 4 variants, the shards once."""
    work = tmp_path / "work"
    work.mkdir()
    write_run_config(work, {"max_steps": "100", "checkpoint_steps": "50"})
    with running_luigid(tmp_path / "luigid", resources={"gpu": 2}) as scheduler:
        command = ["python", "-m", "pipeline", "sweep", "PlotInference", *SWEEP, "--workers", "2", *scheduler.cli()]
        first = run_cli(command, cwd=work)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "13 ran successfully" in first.stderr  # 1 CreateShards, 4 x (train, evaluate, plot)
        assert "1 CreateShards(" in first.stderr and "4 TrainEstimator(" in first.stderr
        # The grid in the scheduler (what its web UI lists): four trainings, by their resolved values.
        trainings = scheduler.by_family("DONE")["TrainEstimator"]
        assert sorted((t["params"]["learning_rate"], t["params"]["seed"]) for t in trainings) == [
            ("0.003", "1"), ("0.003", "2"), ("0.01", "1"), ("0.01", "2"),
        ]  # fmt: skip
        assert len(scheduler.by_family("DONE")["CreateShards"]) == 1

        # The comparison table: one row per variant, the swept parameters first, then the metrics.
        lines = first.stdout.splitlines()
        header = lines[0].split()
        assert header[:3] == ["run", "learning_rate", "TrainEstimator.seed"] and "mse" in header
        rows = [line.split() for line in lines[1:5]]
        assert sorted((row[1], row[2]) for row in rows) == [
            ("0.003", "1"),
            ("0.003", "2"),
            ("0.01", "1"),
            ("0.01", "2"),
        ]
        metrics = {
            json.loads(p.read_text())["validation"]["mse"] for p in (work / "reports").glob("*-eval-*/metrics.json")
        }
        shown = {float(row[header.index("mse")]) for row in rows}
        assert {round(m, 4) for m in metrics} == {round(m, 4) for m in shown}
        report = Path(lines[-1].rsplit(" ", 1)[-1])
        assert report.is_file() and report.parent == (work / "reports").resolve()
        assert report.read_text().count("<img") >= 4

        again = run_cli(command, cwd=work)
        assert again.returncode == 0, again.stderr[-3000:]
        summary = again.stderr[again.stderr.index("===== Luigi Execution Summary") :]
        assert "ran successfully" not in summary and "4 complete ones were encountered" in summary
        assert again.stdout.splitlines()[1:5] == first.stdout.splitlines()[1:5]


def test_a_bad_sweep_value_is_one_line_with_exit_code_40(tmp_path: Path) -> None:
    make_root(tmp_path)
    out = run_cli(["python", "-m", "pipeline", "sweep", "PlotInference", "--TrainEstimator-seed", "1,x"], cwd=tmp_path)
    assert out.returncode == 40 and "Traceback" not in out.stderr
    assert "--TrainEstimator-seed value 'x' is not accepted" in out.stderr
    assert not (tmp_path / "data").exists()
