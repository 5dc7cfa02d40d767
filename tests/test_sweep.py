"""`python -m pipeline sweep`: a grid of variants in one Luigi invocation (pipeline/sweep.py, Stage.variant)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import sweep
from pipeline.errors import ParameterError
from pipeline.tasks import CreateShards, PlotInference, TrainEstimator


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
