"""The quality gate (EvaluateEstimator's verdict, evaluation/gate.py) and ExportModel (serving/export_model.py),
on the sine trained for a few steps: thresholds passed and failed, a baseline, the verdict where a user looks
(metrics.json, the marker, status, runs, the report), and the exports TF Serving reads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from luigi.task_register import Register

import pipeline
from pipeline import layout
from pipeline.core import markers
from pipeline.core.stage import Stage
from pipeline.evaluation import gate
from tests.conftest import Config, build, make_root, run_cli

TINY = {"batch_size": "64", "max_steps": "100", "checkpoint_steps": "50", "steps_per_execution": "50"}
TIGHT = '{"validation.mse": 1e-9}'  # no model of the noisy sine (noise variance 0.01) meets it


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An artifact root (also the root of commands run in it) with one sine model trained for 100 steps."""
    folder = make_root(tmp_path_factory.mktemp("gate"))
    base = Config()
    base.set("paths", "root", folder)
    for option, value in TINY.items():
        base.set("TrainEstimator", option, value)
    (folder / "luigi.cfg").write_text(
        (folder / "luigi.cfg").read_text()
        + "[TrainEstimator]\n"
        + "".join(f"{option} = {value}\n" for option, value in TINY.items())
    )
    Register.clear_instance_cache()
    try:
        build(pipeline.EvaluateEstimator())
        yield folder
    finally:
        base.restore()
        Register.clear_instance_cache()


def _settings(config: Config, section: str, **values: Any) -> None:
    for option, value in values.items():
        config.set(section, option, value)
    Register.clear_instance_cache()


def _report(task: pipeline.EvaluateEstimator) -> dict[str, Any]:
    return json.loads((task.output_dir() / layout.METRICS).read_text())


def _info(task: Stage) -> dict[str, Any]:
    marker = markers.read_marker(task.output_dir())
    assert marker is not None
    return marker["info"]


def test_thresholds_bless_or_refuse_with_the_values_checked(root: Path, config: Config) -> None:
    evaluation = pipeline.EvaluateEstimator()
    unchecked = _report(evaluation)[gate.VERDICT]
    assert unchecked["status"] == gate.UNCHECKED and unchecked["blessed"] and unchecked["checks"] == []
    assert "no thresholds set" in unchecked["summary"]
    mse = _report(evaluation)["validation"]["mse"]

    # Loose and tight bounds on a loss (at most) and on a metric of the problem's own (macro names too).
    _settings(config, "EvaluateEstimator", require=json.dumps({"validation.mse": 10 * mse, "train.rmse": 100.0}))
    loose = pipeline.EvaluateEstimator()
    assert loose.identity().digest != evaluation.identity().digest  # the thresholds are significant
    assert build(loose) == {"EvaluateEstimator"}  # the training is reused
    verdict = _report(loose)[gate.VERDICT]
    assert verdict["status"] == gate.BLESSED and verdict["failed"] == []
    checked = {check["metric"]: check for check in verdict["checks"]}
    assert checked["validation.mse"]["value"] == mse and checked["validation.mse"]["direction"] == gate.AT_MOST
    assert checked["train.rmse"]["value"] == _report(loose)["train"]["rmse"]
    assert _info(loose)["verdict"] == {"status": gate.BLESSED, "summary": verdict["summary"]}

    _settings(config, "EvaluateEstimator", require=json.dumps({"validation.mse": mse / 2, "train.mae": 100.0}))
    tight = pipeline.EvaluateEstimator()
    build(tight)
    verdict = _report(tight)[gate.VERDICT]
    assert verdict["status"] == gate.NOT_BLESSED and not verdict["blessed"]
    assert verdict["failed"] == [f"validation.mse {mse:.4g} > {mse / 2:.4g} (required)"]
    assert verdict["summary"] == f"{gate.NOT_BLESSED}: {verdict['failed'][0]}"


def test_a_direction_is_inferred_or_given_and_a_bad_requirement_is_one_line(root: Path, config: Config) -> None:
    assert [gate.direction(m) for m in ("validation.mse", "validation.accuracy", "validation.mean_squared_error")] == [
        gate.AT_MOST,
        gate.AT_LEAST,
        gate.AT_MOST,
    ]
    assert gate.parse_requirements({"validation.score": {"at_most": 2}}) == {"validation.score": (gate.AT_MOST, 2.0)}
    for bad, named in (
        ({"accuracy": 0.9}, "<split>.<name>"),
        ({"validation.mse": "low"}, "finite number"),
        ({"validation.mse": float("nan")}, "finite number"),
    ):
        _settings(config, "EvaluateEstimator", require=json.dumps(bad))
        with pytest.raises(ValueError, match=re.escape(named)):
            pipeline.EvaluateEstimator()
    # A metric this evaluation does not report: its name and the ones it has.
    with pytest.raises(ValueError, match=r"validation\.accuracy.*it reports: .*validation\.mse"):
        gate.verdict(_report(pipeline.EvaluateEstimator(require={})), {"validation.accuracy": 0.9})


def test_export_versions_refusal_force_and_a_fresh_process_loads_it(root: Path, config: Config) -> None:
    base = root / "exports" / "sine-mlp"
    # Refused: exit 30 and one line naming the failed threshold; nothing exported.
    refused = run_cli(
        ["luigi", "--module", "pipeline", "ExportModel", "--local-scheduler", "--EvaluateEstimator-require", TIGHT],
        cwd=root,
    )
    assert refused.returncode == 30, refused.stderr[-3000:]
    output = refused.stdout + refused.stderr
    (line,) = [line for line in output.splitlines() if "ExportModel refused" in line]
    assert "validation.mse" in line and "1e-09 (required)" in line and "--ExportModel-force" in line
    assert "Traceback" not in output
    assert f"Quality gate: not blessed: {line.split('bless: ')[1].split('. ')[0]}" in refused.stdout  # results block
    assert not base.exists()

    # Forced: exported, and recorded as forced in the marker, status and runs.
    _settings(config, "EvaluateEstimator", require=TIGHT)
    forced = pipeline.ExportModel(force=True)
    assert build(forced) == {"ExportModel"}  # the refused run published the evaluation
    assert _info(forced)["export"] == {
        "name": "sine-mlp",
        "version": 1,
        "path": str(base / "1"),
        "reused": False,
        "forced": True,
        "verdict": gate.NOT_BLESSED,
    }
    model_dir = pipeline.TrainEstimator().output_dir()
    saved = sorted(p.relative_to(model_dir / layout.SAVED_MODEL) for p in (model_dir / layout.SAVED_MODEL).rglob("*"))
    assert sorted(p.relative_to(base / "1") for p in (base / "1").rglob("*")) == saved
    status = run_cli(["python", "-m", "pipeline", "status", "ExportModel", "--EvaluateEstimator-require", TIGHT], root)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"exported to {base / '1'} (version 1, forced past the gate: not blessed)" in status.stdout
    assert "verdict: not blessed: validation.mse" in status.stdout

    # Blessed (no thresholds set): the same model keeps its version; an unchanged rerun runs nothing.
    config.set("EvaluateEstimator", "require", "{}")
    Register.clear_instance_cache()
    blessed = pipeline.ExportModel()
    assert build(blessed) == {"ExportModel"}  # the evaluation without thresholds is the fixture's
    assert _info(blessed)["export"]["version"] == 1 and _info(blessed)["export"]["reused"] is True
    assert _info(blessed)["export"]["forced"] is False
    Register.clear_instance_cache()
    assert build(pipeline.ExportModel()) == set()

    # Another model: version 2, beside version 1.
    _settings(config, "TrainEstimator", seed=7)
    retrained = pipeline.ExportModel()
    assert build(retrained) == {"TrainEstimator", "EvaluateEstimator", "ExportModel"}
    assert _info(retrained)["export"]["version"] == 2 and sorted(p.name for p in base.iterdir()) == ["1", "2"]

    # A version deleted under it: stale, exported again.
    shutil.rmtree(base / "2")
    Register.clear_instance_cache()
    assert f"the export {base / '2'} is gone" in pipeline.ExportModel().stale_reasons()
    assert build(pipeline.ExportModel()) == {"ExportModel"} and (base / "2" / "saved_model.pb").is_file()

    # A client's process, with nothing of the project: tf.saved_model.load, and the sine's predictions.
    client = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "name, fn = next((n, f) for n, f in model.signatures.items()\n"
        "    if [s.dtype for s in f.structured_input_signature[1].values()] == [tf.float32])\n"
        "out = fn(tf.constant([[0.0], [1.5]]))\n"
        "print(json.dumps([name, np.ravel(next(iter(out.values())).numpy()).tolist()]))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", client, str(base / "2")], capture_output=True, text=True, cwd="/", timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    _, served = json.loads(loaded.stdout.strip().splitlines()[-1])
    import numpy as np

    from pipeline.evaluation import evaluate

    expected = evaluate.load_model(pipeline.TrainEstimator().output_dir())(np.array([[0.0], [1.5]], np.float32))
    assert served == pytest.approx(np.ravel(expected).tolist(), abs=1e-5)

    # runs: the verdict and the export as columns, the forced export named so.
    table = run_cli(["python", "-m", "pipeline", "runs", "--json"], root)
    assert table.returncode == 0, table.stderr
    records = {record["run"]: record for record in json.loads(table.stdout)}
    assert records[model_dir.name]["export"] == "sine-mlp/1"  # the newest export of that model: unforced
    assert records[pipeline.TrainEstimator().output_dir().name]["export"] == "sine-mlp/2"
    # Of each stage the newest folder, as for the metrics: model 1's newest evaluation is the refused one's.
    assert records[model_dir.name]["verdict"] == gate.NOT_BLESSED
    assert records[pipeline.TrainEstimator().output_dir().name]["verdict"] == gate.UNCHECKED
    page = run_cli(["python", "-m", "pipeline", "report", "--out", str(root / "runs.html")], root)
    assert page.returncode == 0, page.stderr
    html = (root / "runs.html").read_text()
    assert "<th>verdict</th>" in html and "<th>export</th>" in html and "sine-mlp/2</td>" in html


def test_a_baseline_is_the_best_so_far_or_a_named_run(root: Path, config: Config) -> None:
    first = pipeline.TrainEstimator().output_dir().name
    _settings(config, "TrainEstimator", seed=7)  # the second model (trained by the export test, or now)
    _settings(config, "EvaluateEstimator", baseline="best", max_regression=1000.0)
    lenient = pipeline.EvaluateEstimator()
    build(lenient)
    verdict = _report(lenient)[gate.VERDICT]
    plain = pipeline.EvaluateEstimator(baseline="", max_regression=0.0)
    build(plain)
    other = _report(plain)
    assert verdict["baseline"]["run"] == first and verdict["baseline"]["same_data"] is True
    assert verdict["status"] == gate.BLESSED
    (check,) = verdict["checks"]
    assert check["metric"] == "validation.mse" and check["against"] == f"baseline {first}"
    assert check["value"] == other["validation"]["mse"]
    assert verdict["baseline"]["values"]["validation.mse"] + 1000.0 == check["bound"]

    # Named by its identity prefix: the identity holds its folder's name, so any spelling is one identity.
    config.set("EvaluateEstimator", "max_regression", "0")
    named = pipeline.EvaluateEstimator(baseline=first.rsplit("-", 1)[1][:8], max_regression=0.0)
    assert named.resolved()["baseline"] == first
    with pytest.raises(ValueError, match=r"^--EvaluateEstimator-baseline: No published stage folder"):
        pipeline.EvaluateEstimator(baseline="nosuchrun")
