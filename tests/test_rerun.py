"""What reruns when: code, content, source folders, run cache, force, status.

Each scenario asserts exactly which tasks ran, from Luigi's detailed summary.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import luigi
import pytest

from pipeline import __main__ as cli
from pipeline import layout
from pipeline.cli.status import explain
from pipeline.core import markers, publish
from pipeline.core.stage import Stage
from pipeline.etl import shards, sources
from pipeline.tasks import CreateShards, EvaluateEstimator, PlotInference, Repro, TrainEstimator
from tests.conftest import PROJECT_DIR, ROOT_HERE, SMALL_TRAINING, UP_TO_DATE_RUN_IMPORTS, Config, build, run_cli

ALL = {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"}


def ran_in_summary(stderr: str) -> set[str]:
    """The task families listed under "ran successfully" in Luigi's execution summary."""
    match = re.search(r"ran successfully:\n((?:\s+- .*\n)+)", stderr)
    return set(re.findall(r"- \d+ (\w+)\(", match.group(1))) if match else set()


def _first_shard() -> Path:
    return layout.shard_files(CreateShards().output_dir(), "train")[0]


# --- code awareness: a copy of the package, edited, run by the real `luigi` command ---


@pytest.fixture
def project_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of pipeline/ and luigi.cfg, and a work folder whose luigi.cfg makes training short."""
    proj, work = tmp_path / "proj", tmp_path / "work"
    shutil.copytree(PROJECT_DIR / "pipeline", proj / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_DIR / "luigi.cfg", proj / "luigi.cfg")
    work.mkdir()
    small = "\n".join(f"{k} = {v}" for k, v in SMALL_TRAINING.items())
    (work / "luigi.cfg").write_text(f"{ROOT_HERE}[TrainEstimator]\n{small}\n")
    return proj, work


def _run_copy(proj: Path, work: Path, *args: str) -> tuple[set[str], str]:
    os.environ["PYTHONPATH"] = str(proj)
    try:
        out = run_cli(["luigi", "--module", "pipeline", "PlotInference", "--local-scheduler", *args], cwd=work)
        status = run_cli(["python", "-m", "pipeline", "status", "PlotInference"], cwd=work)
    finally:
        del os.environ["PYTHONPATH"]
    assert out.returncode == 0, out.stderr[-3000:]
    assert "pipeline/__init__.py" not in out.stderr  # a traceback would name it
    return ran_in_summary(out.stderr), status.stdout


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_code_edits_rerun_exactly_the_stages_that_run_that_code(project_copy: tuple[Path, Path]) -> None:
    proj, work = project_copy
    ran, _ = _run_copy(proj, work)
    assert ran == ALL

    # Comments, docstrings and formatting do not count.
    _edit(proj / "pipeline" / "networks.py", "    h = inputs\n", "    h = inputs  # the input layer\n\n")
    _edit(proj / "pipeline" / "networks.py", '"""Dense ReLU layers', '"""Some dense ReLU layers')
    _edit(proj / "pipeline" / "evaluation" / "figures.py", "ax.set_xlabel(", "ax.set_xlabel(  # x axis\n        ")
    ran, status = _run_copy(proj, work)
    assert ran == set()
    assert status.count("up to date") == 4

    # The plotting code: only PlotInference.
    _edit(proj / "pipeline" / "evaluation" / "figures.py", "dpi=110", "dpi=100")
    (plots_before,) = (work / "reports").glob("sine-mlp-plots-*")
    os.environ["PYTHONPATH"] = str(proj)
    try:
        status = run_cli(["python", "-m", "pipeline", "status", "PlotInference"], cwd=work).stdout
    finally:
        del os.environ["PYTHONPATH"]
    assert "code in pipeline/evaluation/figures.py changed" in status
    ran, _ = _run_copy(proj, work)
    assert ran == {"PlotInference"}
    assert len(list((work / "reports").glob("sine-mlp-plots-*"))) == 2 and plots_before.exists()

    # The network: training and everything below it.
    _edit(proj / "pipeline" / "networks.py", 'name=f"hidden_{i}"', 'name=f"layer_{i}"')
    ran, _ = _run_copy(proj, work)
    assert ran == {"TrainEstimator", "EvaluateEstimator", "PlotInference"}

    # A module no stage names but every stage's code imports (the closure): which shard files a
    # split has. Every stage reads or writes shards through it: everything reruns.
    _edit(proj / "pipeline" / "layout.py", 'return sorted((folder / split).glob("*.tfrecord"))',
          'return sorted((folder / split).glob("*.tfrecord"), key=str)')  # fmt: skip
    os.environ["PYTHONPATH"] = str(proj)
    try:
        status = run_cli(["python", "-m", "pipeline", "status", "PlotInference"], cwd=work).stdout
    finally:
        del os.environ["PYTHONPATH"]
    assert "code in pipeline/layout.py changed" in status
    ran, _ = _run_copy(proj, work)
    assert ran == ALL


# --- content awareness -----------------------------------------------------------------


def test_touch_makes_nothing_stale(workspace: Path) -> None:
    assert build(PlotInference()) == ALL
    shard = _first_shard()
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))
    assert CreateShards().complete()
    assert build(Repro()) == set()


@pytest.mark.parametrize("damage", ["delete", "rewrite"])
def test_damaged_shard_is_stale_and_rebuilt_without_rerunning_below(workspace: Path, damage: str) -> None:
    assert build(PlotInference()) == ALL
    shard = _first_shard()
    trained_on = markers.read_marker(TrainEstimator().output_dir())
    if damage == "delete":
        shard.unlink()
        expected = f"output file train/{shard.name} is missing"
    else:
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
        expected = f"output file train/{shard.name} was altered (content differs)"
    assert CreateShards().stale_reasons() == [expected]
    # Luigi's rule: PlotInference's inputs did not change, so it is complete.
    assert build(PlotInference()) == set()
    # Repro checks every stage in order: the shard is rebuilt (same bytes) and nothing below reruns.
    assert build(Repro()) == {"CreateShards", "Repro"}
    assert markers.read_marker(TrainEstimator().output_dir()) == trained_on
    assert all(stage.complete() for stage in (CreateShards(), TrainEstimator(), PlotInference()))


def _republish_with_other_bytes() -> None:
    """CreateShards' output replaced by other bytes under the same identity (as a nondeterministic ETL would)."""
    task = CreateShards()
    staging = publish.staging_path(task.output_dir())
    shutil.rmtree(staging, ignore_errors=True)
    other = sources.SineSource(num_examples=task.num_examples, seed=task.seed + 1)
    shards.create_shards(staging, other, {"train": task.num_train_shards, "validation": task.num_validation_shards})
    markers.write_marker(staging, task.identity(), {})
    publish.publish(staging, task.output_dir())


def test_new_upstream_bytes_rerun_the_stages_below(workspace: Path) -> None:
    assert build(PlotInference()) == ALL
    _republish_with_other_bytes()
    assert TrainEstimator().stale_reasons() == ["upstream CreateShards output changed since this ran"]
    assert build(PlotInference()) == {"TrainEstimator", "EvaluateEstimator", "PlotInference"}


def test_forced_stage_reruns_and_identical_bytes_stop_there(workspace: Path, config: Config) -> None:
    assert build(PlotInference()) == ALL
    before = markers.read_marker(CreateShards().output_dir())
    config.set("CreateShards", "force", "true")
    luigi.task_register.Register.clear_instance_cache()
    assert build(Repro()) == {"CreateShards", "Repro"}
    after = markers.read_marker(CreateShards().output_dir())
    assert before is not None and after is not None
    assert after["run_id"] != before["run_id"]  # it did run again
    assert after["content_digest"] == before["content_digest"]  # deterministic: same bytes


def test_deterministic_forced_retrain_reruns_nothing_below(workspace: Path, config: Config) -> None:
    """The model folder's content digest covers what the stages below read, not event files or save dates."""
    assert build(PlotInference()) == ALL
    before = markers.read_marker(TrainEstimator().output_dir())
    config.set("TrainEstimator", "force", "true")
    luigi.task_register.Register.clear_instance_cache()
    assert build(Repro()) == {"TrainEstimator", "Repro"}
    after = markers.read_marker(TrainEstimator().output_dir())
    assert before is not None and after is not None
    assert after["run_id"] != before["run_id"]  # it did train again
    # Same weights and history, so the same content; yet the archive's and the event files' bytes differ.
    assert after["content_digest"] == before["content_digest"]
    for name in (layout.HISTORY, "train_config.json"):
        assert after["files"][name]["sha256"] == before["files"][name]["sha256"]
    archive = layout.KERAS_MODEL
    assert after["files"][archive]["sha256"] != before["files"][archive]["sha256"]
    assert after["files"][archive]["content"] == before["files"][archive]["content"]
    events = {rel for rel in after["files"] if rel.startswith(layout.EVENTS + "/")}
    assert events and events.isdisjoint(before["files"])  # named after their time and process
    assert all(stage.complete() for stage in (EvaluateEstimator(), PlotInference()))


# --- source folders ------------------------------------------------------------------------


class ListFolder(Stage):
    """A test stage that reads a folder of user files (as the image source does)."""

    artifact_kind = "data"
    folder = luigi.Parameter()

    def folder_prefix(self) -> str:
        return "listing"

    def source_folders(self) -> dict[str, Path]:
        return {"folder": Path(self.folder)}

    def build(self, staging: Path) -> dict[str, Any]:
        (staging / "names.txt").write_text("\n".join(sorted(p.name for p in Path(self.folder).iterdir())))
        return {}


def test_source_folder_changes_make_the_stage_stale(workspace: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "a.png").write_bytes(b"a" * 10)
    task = ListFolder(folder=str(folder))
    assert build(task) == {"ListFolder"}
    assert build(task) == set()

    (folder / "cat" / "b.png").write_bytes(b"b")  # added
    assert not task.complete() and build(task) == {"ListFolder"}
    (folder / "cat" / "a.png").write_bytes(b"a" * 11)  # changed
    assert not task.complete() and build(task) == {"ListFolder"}
    (folder / "cat" / "b.png").unlink()  # removed
    reasons = explain(task)
    assert reasons == ["source folder folder changed (files added, removed or modified)"]
    assert build(task) == {"ListFolder"}
    (folder / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    assert task.complete()


# --- run cache, status, gc ----------------------------------------------------------------


def test_changing_a_parameter_back_reuses_the_earlier_result(workspace: Path, config: Config) -> None:
    assert build(PlotInference()) == ALL
    first = TrainEstimator().output_dir()
    config.set("TrainEstimator", "batch_size", "32")
    assert build(PlotInference()) == {"TrainEstimator", "EvaluateEstimator", "PlotInference"}
    config.set("TrainEstimator", "batch_size", "64")
    assert build(PlotInference()) == set()
    assert TrainEstimator().output_dir() == first


def test_status_names_each_reason(workspace: Path, config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    def status(*args: str, stale: bool = True) -> str:
        capsys.readouterr()
        assert cli.main(["status", "PlotInference", *args]) == (1 if stale else 0)  # 1: something is stale
        return capsys.readouterr().out

    out = status()
    assert out.count("no output yet") == 4
    build(PlotInference())
    assert status(stale=False).count("up to date") == 4
    out = status("--TrainEstimator-batch-size", "32")
    assert "parameter batch_size changed from 64 to 32" in out
    assert "upstream stage TrainEstimator changed" in out
    assert re.search(r"^CreateShards\s+up to date", out, re.M)
    _first_shard().unlink()
    out = status()
    assert re.search(r"^CreateShards\s+stale", out, re.M)
    assert "is missing" in out
    assert re.search(r"^TrainEstimator\s+up to date", out, re.M)


def test_up_to_date_run_imports_no_tensorflow(workspace: Path) -> None:
    build(PlotInference())
    cfg = "\n".join(f"{k} = {v}" for k, v in SMALL_TRAINING.items())
    (workspace / "luigi.cfg").write_text(f"{ROOT_HERE}[TrainEstimator]\n{cfg}\n")
    out = run_cli(["python", "-c", UP_TO_DATE_RUN_IMPORTS], cwd=workspace)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False False"
    assert "Did not run any tasks" in out.stderr
