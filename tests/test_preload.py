"""With `--workers 2`, TensorFlow is imported once per Luigi worker, not once per task (runtime/preload.py), and the
light stages are built in warm runners (runtime/warm.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.scheduler import write_run_config

SWEEP = ["--TrainEstimator-learning-rate", "0.01,0.02"]  # two variants: 2 x (train, evaluate, plot)
PRELOADED = "Imported tensorflow and keras once for this worker's tasks"


def tensorflow_stages(root: Path) -> dict[str, dict[str, Any]]:
    """The published folders of the stages that use TensorFlow, by name, and their markers."""
    folders = [*root.glob("models/*"), *root.glob("reports/*-eval-*"), *root.glob("reports/*-plots-*")]
    return {folder.name: json.loads((folder / "_SUCCESS.json").read_text()) for folder in folders if folder.is_dir()}


def sweep(work: Path, workers: int) -> tuple[dict[str, dict[str, Any]], str]:
    """The two-variant sweep on `workers` workers in a fresh root: its TensorFlow stages' markers, its log."""
    work.mkdir()
    write_run_config(work, {"max_steps": "200", "checkpoint_steps": "100"})
    command = ["python", "-m", "pipeline", "sweep", "PlotInference", *SWEEP, "--workers", str(workers)]
    # A deadlock in a forked child would hang: the timeout fails the test instead.
    out = run_cli([*command, "--local-scheduler"], cwd=work, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "7 ran successfully" in out.stderr  # 1 CreateShards, 2 x (train, evaluate, plot)
    return tensorflow_stages(work), out.stderr


@pytest.mark.slow
def test_two_variants_on_two_workers_import_tensorflow_once_and_end_as_on_one_worker(tmp_path: Path) -> None:
    two, log = sweep(tmp_path / "two-workers", 2)
    imports = [marker["info"]["tensorflow_import"] for marker in two.values()]
    assert len(imports) == 6
    # Each stage ran in a child of its own, forked from the worker process, which imported TensorFlow
    # once for all six, and had never started TensorFlow's runtime when it forked them.
    assert len({i["stage_pid"] for i in imports}) == 6
    (importer,) = {i["imported_by"] for i in imports}
    assert importer not in {i["stage_pid"] for i in imports}
    assert not any(i["runtime_started_before"] for i in imports)
    assert log.count(PRELOADED) == 1
    # The light stages were built in the worker's warm runners (runtime/warm.py), one per worker process,
    # forked from the worker too; the trainings in their own children. No runner outlived the command.
    light = {name: m["info"] for name, m in two.items() if "-eval-" in name or "-plots-" in name}
    assert len(light) == 4 and all("warm_runner" in info for info in light.values()), light
    runners = {info["warm_runner"]["pid"] for info in light.values()}
    assert 1 <= len(runners) <= 2 and not runners & {importer, *(i["stage_pid"] for i in imports)}
    assert sorted(info["warm_runner"]["builds_before"] for info in light.values())[0] == 0
    assert all("warm_runner" not in m["info"] for name, m in two.items() if name not in light)
    assert all(info["cpu_seconds"] > 0.05 for info in light.values())  # the runner's CPU seconds, counted
    assert not any(Path(f"/proc/{pid}").exists() for pid in runners)

    one, log = sweep(tmp_path / "one-worker", 1)
    assert not any("warm_runner" in m["info"] for m in one.values())
    # One worker runs every stage in its own process, which imports TensorFlow itself, once: no preloading.
    worker = next(iter(one.values()))["info"]["tensorflow_import"]["stage_pid"]
    assert {(m["info"]["tensorflow_import"]["imported_by"], m["info"]["tensorflow_import"]["stage_pid"]) for m in
            one.values()} == {(worker, worker)}  # fmt: skip
    assert PRELOADED not in log

    # The same results: the same stage identities, trainings that ended at the same losses, the same metrics.
    assert sorted(one) == sorted(two)
    for name, marker in one.items():
        assert marker["info"].get("last_eval") == two[name]["info"].get("last_eval"), name
    evaluations = [name for name in one if "-eval-" in name]
    assert len(evaluations) == 2
    for name in evaluations:
        metrics_one = json.loads((tmp_path / "one-worker" / "reports" / name / "metrics.json").read_text())
        metrics_two = json.loads((tmp_path / "two-workers" / "reports" / name / "metrics.json").read_text())
        assert metrics_one == metrics_two and metrics_one["validation"]["mse"] > 0
