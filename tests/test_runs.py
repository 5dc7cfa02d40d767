"""Runs side by side (pipeline/experiments/runs.py, `python -m pipeline runs`) and what differs between two
(pipeline/experiments/diff.py, `python -m pipeline diff`), on three real sine runs."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import layout
from pipeline.core import markers
from pipeline.errors import ParameterError
from pipeline.experiments import diff, runs
from tests.conftest import SineRuns, run_cli

ORDER = ("base", "slower", "reseeded")  # the order the fixture ran them


def _marker(folder: Path) -> dict[str, Any]:
    marker = markers.read_marker(folder)
    assert marker is not None, folder
    return marker


def _reader(root: Path, pattern: str, model: Path) -> Path:
    """The one reports folder matching `pattern` whose marker names `model` upstream."""
    model_identity = _marker(model)["identity"]
    (found,) = [f for f in (root / "reports").glob(pattern) if model_identity in _marker(f)["upstream"].values()]
    return found


def _cells(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]


def test_the_table_shows_what_differs_the_metrics_and_the_times(sine_runs: SineRuns) -> None:
    found = runs.collect(sine_runs.root)
    assert [run.model.folder for run in found] == [sine_runs.models[name] for name in ORDER]  # oldest first

    header, *rows = _cells(runs.format_table(found))
    # Parameters that differ (shards seed, learning rate, training seed), headed by their name
    # unless two stages share it; the validation metrics; when; seconds per stage.
    assert header == [
        "run", "CreateShards.seed", "learning_rate", "TrainEstimator.seed", "mae", "mse", "rmse", "verdict", "finished",
        "CreateShards s", "TrainEstimator s", "EvaluateEstimator s", "PlotInference s",
    ]  # fmt: skip
    expected_params = {
        "base": ["1234", "0.01", "42"],
        "slower": ["1234", "0.003", "42"],
        "reseeded": ["99", "0.01", "7"],
    }
    for row, name in zip(rows, ORDER, strict=True):
        model = sine_runs.models[name]
        evaluation = _reader(sine_runs.root, "sine-mlp-eval-*", model)
        plots = _reader(sine_runs.root, "sine-mlp-plots-*", model)
        validation = json.loads((evaluation / layout.METRICS).read_text())["validation"]
        plots_info = _marker(plots)["info"]
        assert row[0] == model.name
        assert row[1:4] == expected_params[name]
        assert row[4:7] == [f"{validation[m]:.4g}" for m in ("mae", "mse", "rmse")]
        assert row[7] == "no thresholds set"  # the quality gate's verdict (docs/serving.md)
        # The run finished when its last stage (the plots) did.
        assert row[8] == time.strftime("%Y-%m-%d %H:%M", time.localtime(plots_info["finished_at"]))
        seconds = [_marker(folder)["info"]["elapsed_seconds"] for folder in (model, evaluation, plots)]
        assert row[10:13] == [f"{s:.1f}" for s in seconds]


def test_sort_every_parameter_and_swept_columns(sine_runs: SineRuns) -> None:
    found = runs.collect(sine_runs.root)
    mse = {run.name: run.metrics["validation.mse"] for run in found}
    for key in ("mse", "validation.mse"):  # by header or by key
        _, *rows = _cells(runs.format_table(found, sort_by=key))
        assert [row[0] for row in rows] == sorted(mse, key=mse.__getitem__)
    _, *rows = _cells(runs.format_table(found, sort_by="mse", reverse=True))
    assert [row[0] for row in rows] == sorted(mse, key=mse.__getitem__, reverse=True)

    header, *rows = _cells(runs.format_table(found, all_params=True))
    for name, value in (
        ("batch_size", "64"),
        ("network_args.hidden_units", "[100, 100]"),  # the resolved network's arguments, flattened
        ("source", "sine"),
        ("lr_decay", "true"),
    ):
        assert [row[header.index(name)] for row in rows] == [value] * 3
    assert header.index("num_examples") < header.index("batch_size")  # upstream stages first

    header, *_ = _cells(runs.format_table(found, swept=["TrainEstimator.batch_size"]))
    assert header[:3] == ["run", "batch_size", "CreateShards.seed"]  # swept first, though all equal

    # A parameter that does not differ is not shown but still orders (runs keep their order on a tie).
    _, *rows = _cells(runs.format_table(found, sort_by="batch_size", reverse=True))
    assert [row[0] for row in rows] == [run.name for run in found]
    columns = r"--sort-by names no column of the table; columns: run, CreateShards\.seed"
    with pytest.raises(ParameterError, match=columns):
        runs.format_table(found, sort_by="accuracy")


def test_runs_command_json_csv_and_mistakes(sine_runs: SineRuns) -> None:
    out = run_cli(["python", "-m", "pipeline", "runs", "--json"], cwd=sine_runs.root)  # its luigi.cfg: [paths] root = .
    assert out.returncode == 0, out.stderr
    records = {record["run"]: record for record in json.loads(out.stdout)}
    assert list(records) == [sine_runs.models[name].name for name in ORDER]
    for name in ORDER:
        record = records[sine_runs.models[name].name]
        marker = _marker(sine_runs.models[name])
        assert record["identity"] == marker["identity"]
        own = {k.removeprefix("TrainEstimator."): v for k, v in record["params"].items() if k.startswith("Train")}
        nested = {k: v for k, v in marker["params"].items() if isinstance(v, dict)}
        assert own == {
            **{k: v for k, v in marker["params"].items() if k not in nested},
            **{f"{k}.{sub}": v for k, values in nested.items() for sub, v in values.items()},
        }
        metrics = json.loads(
            (_reader(sine_runs.root, "sine-mlp-eval-*", sine_runs.models[name]) / layout.METRICS).read_text()
        )
        assert record["metrics"] == {f"validation.{k}": metrics["validation"][k] for k in ("mae", "mse", "rmse")}
        plots = _reader(sine_runs.root, "sine-mlp-plots-*", sine_runs.models[name])
        assert record["figures"] == [str(path) for path in sorted(plots.glob("*.png"))]
        assert len(record["figures"]) >= 2  # predictions and training curves at least

    out = run_cli(["python", "-m", "pipeline", "runs", "--csv", "--sort-by", "learning_rate"], cwd=sine_runs.root)
    assert out.returncode == 0, out.stderr
    table = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [row["TrainEstimator.learning_rate"] for row in table] == ["0.003", "0.01", "0.01"]
    assert float(table[0]["validation.mse"]) == records[sine_runs.models["slower"].name]["metrics"]["validation.mse"]

    for args, message in (
        (["runs", "--sort-by", "nope"], "--sort-by names no column of the table; columns: run, "),
        (["runs", "--json", "--csv"], "python -m pipeline runs: argument --csv: not allowed with argument --json."),
        (["diff", "abcdef", sine_runs.models["base"].name], "No published stage folder under"),
    ):
        out = run_cli(["python", "-m", "pipeline", *args], cwd=sine_runs.root)
        assert out.returncode == 40, (args, out.stderr)
        assert out.stderr.startswith("ERROR: ParameterError: " + message), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert out.stdout == ""


def _copy_markers(source: Path, target: Path) -> None:
    """The same artifact root with its markers only: what `runs` reads."""
    for marker in source.rglob(markers.MARKER):
        destination = target / marker.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(marker, destination)


def test_parameters_are_read_generically_and_flattened(sine_runs: SineRuns, tmp_path: Path) -> None:
    """A stage that records a resolved configuration (nested, other names) instead of Luigi's parameters."""
    _copy_markers(sine_runs.root, tmp_path)
    for name, rate in (("base", 0.01), ("slower", 0.003), ("reseeded", 0.01)):
        path = tmp_path / "models" / sine_runs.models[name].name / markers.MARKER
        marker = json.loads(path.read_text())
        marker["params"] = {"network": "mlp", "optimizer": {"name": "adam", "learning_rate": {"initial": rate}}}
        path.write_text(json.dumps(markers.seal(marker)))  # changed on purpose: sealed again to be trusted
    # One model whose evaluation and plots were removed: its metrics are blank.
    for folder in (tmp_path / "reports").iterdir():
        if _marker(folder)["upstream"]["TrainEstimator"] == _marker(sine_runs.models["reseeded"])["identity"]:
            shutil.rmtree(folder)

    header, *rows = _cells(runs.format_table(runs.collect(tmp_path)))
    # No other seed now; the evaluation's baseline (the quality gate's; an empty require flattens to nothing)
    # differs: one run has no evaluation.
    assert header[:5] == ["run", "seed", "optimizer.learning_rate.initial", "baseline", "mae"]
    assert [row[2] for row in rows] == ["0.01", "0.003", "0.01"]
    assert rows[2][3:7] == ["-", "-", "-", "-"]  # no evaluation: no baseline, no metrics
    assert runs.collect(tmp_path)[2].downstream == ()


def test_diff_names_each_differing_part_up_the_dag(sine_runs: SineRuns) -> None:
    index = runs.index(sine_runs.root)
    base, slower, reseeded = (index.find(sine_runs.models[name].name) for name in ORDER)
    found = {run.identity: run for run in index.runs()}
    assert index.run(base) == found[base.identity]

    lines = diff.diff(index, base, slower)
    assert lines[0].startswith(f"A: {sine_runs.models['base']} (TrainEstimator, finished ")
    assert lines[2:5] == [
        f"TrainEstimator ({base.folder.name} -> {slower.folder.name}):",
        "  parameter learning_rate: 0.01 -> 0.003",
        "results:",
    ]
    assert lines[6] == (
        f"  validation.mse: {found[base.identity].metrics['validation.mse']:.4g} -> "
        f"{found[slower.identity].metrics['validation.mse']:.4g}"
    )

    # By identity prefix: the shards differ too, and their own parameter is named.
    lines = diff.diff(index, index.find(base.identity[:8]), index.find(str(reseeded.folder)))
    shards_a, shards_b = base.upstream["CreateShards"], reseeded.upstream["CreateShards"]
    assert lines[3:6] == [
        "  parameter seed: 42 -> 7",
        f"  upstream CreateShards: {shards_a[:12]} -> {shards_b[:12]}",
        f"CreateShards (sine-{shards_a[:12]} -> sine-{shards_b[:12]}):",
    ]
    assert lines[6] == "  parameter seed: 1234 -> 99"

    shards = index.by_identity[base.upstream["CreateShards"]]
    assert not index.is_model(shards) and "results:" not in diff.diff(index, base, shards)  # no metrics to compare

    assert diff.diff(index, base, base)[2:] == [
        "Same identity: same parameters, code, versions and upstream stages.",
        "Same content.",
    ]


def test_compare_names_code_versions_and_upstream_bytes(sine_runs: SineRuns) -> None:
    base = runs.index(sine_runs.root).find(sine_runs.models["base"].name)
    marker = json.loads(json.dumps(base.marker))
    marker["code"]["pipeline/networks.py"] = "0" * 64
    marker["versions"]["tensorflow"] = "2.22"
    marker["upstream_content"]["CreateShards"] = "f" * 64
    other = runs.Artifact(base.folder, marker)
    assert diff.compare(base, other) == [
        f"code pipeline/networks.py: changed ({base.marker['code']['pipeline/networks.py'][:12]} -> 000000000000)",
        f'version tensorflow: "{base.marker["versions"]["tensorflow"]}" -> "2.22"',
        "upstream CreateShards data: same identity, other bytes read "
        f"({base.marker['upstream_content']['CreateShards'][:12]} -> ffffffffffff)",
    ]
