"""`python -m pipeline gc` keeps experiments (pipeline/cli/cleanup.py): by default only leftovers go.

Leftovers are made the way runs make them: a staging folder prepared by a stage
that then died, an older copy set aside, a lock whose folder is gone. Results of
other configurations are real trainings with another batch size.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import pytest

from pipeline import __main__ as commands
from pipeline import paths
from pipeline.cli import cleanup
from pipeline.core import publish
from pipeline.core.stage import Stage
from pipeline.tasks import EvaluateEstimator, PlotInference, TrainEstimator
from tests.conftest import Config, build


@contextlib.contextmanager
def _held_by_another_process(lock: Path) -> Iterator[None]:
    """Hold `lock` as a running stage does (lockf), from another process (a process never conflicts with itself)."""
    code = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX); "
        "print(1, flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        yield
    finally:
        holder.kill()
        holder.wait()


def _gc(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert commands.main(["gc", *args]) == 0
    return capsys.readouterr().out


def _outputs() -> list[Path]:
    return [TrainEstimator().output_dir(), EvaluateEstimator().output_dir(), PlotInference().output_dir()]


def test_gc_removes_leftovers_and_keeps_results_unless_asked(
    workspace: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    config.set("TrainEstimator", "batch_size", "32")
    build(PlotInference())
    older = _outputs()
    config.set("TrainEstimator", "batch_size", "16")
    build(PlotInference())
    old = _outputs()
    config.set("TrainEstimator", "batch_size", "64")
    assert build(PlotInference()) == {"TrainEstimator", "EvaluateEstimator", "PlotInference"}
    current = _outputs()

    # Leftovers: a training that died after preparing its staging folder (another configuration's),
    # a copy set aside by a publish that died, and the lock of a folder that is gone.
    dead = TrainEstimator(batch_size=8)
    crashed = publish.staging_path(dead.output_dir())
    dead._prepare_staging(crashed, dead.upstream_content())
    aside = current[1].with_name(current[1].name + ".old-123-456")
    shutil.copytree(current[1], aside)
    orphan = paths.lock_path(dead.output_dir().with_name("sine-mlp-000000000000"))
    orphan.touch()
    # A staging folder another run is writing (that process holds its lock), and the current
    # configuration's resumable one (training resumes from it): both stay.
    busy = publish.staging_path(old[2].with_name("sine-mlp-plots-111111111111"))
    busy.mkdir()
    resumable = publish.staging_path(current[0])
    resumable.mkdir()

    with _held_by_another_process(paths.lock_path(cleanup.final_folder(busy))):
        out = _gc(capsys)
        assert f"Artifact root: {workspace}\n" in out
        assert "Would remove 3 (" in out, out
        removing = out[out.index("Would remove 3 (") :]
        assert re.search(
            rf"\n  models/{crashed.name}  \[TrainEstimator staging\]  \d{{4}}-\d\d-\d\d \d\d:\d\d  ", removing
        )
        assert f"\n  reports/{aside.name}  [EvaluateEstimator set aside]" in removing
        assert f"\n  .locks/{orphan.name}  [orphaned lock]" in removing
        kept = out[: out.index("Would remove")]
        assert f"reports/{busy.name}  [in use]" in kept and f"models/{resumable.name}  [resumable]" in kept
        # Each result of another configuration: its stage, what differs from now, its date and size.
        size = cleanup.human_size(cleanup.folder_size(older[0]))
        assert re.search(
            rf"\n  models/{older[0].name}  \[TrainEstimator result\]  \d{{4}}-\d\d-\d\d \d\d:\d\d  {re.escape(size)}\n"
            r"      batch_size 32 \(now: 64\)\n",
            kept,
        )
        assert f"  reports/{older[1].name}  [EvaluateEstimator result]" in kept
        assert "upstream stage TrainEstimator changed" in kept  # same parameters, another model above it
        assert all(p.exists() for p in (crashed, aside, orphan, busy, resumable))

        _gc(capsys, "--yes")
    assert not any(p.exists() for p in (crashed, aside, orphan))
    assert busy.exists() and resumable.exists()
    assert all(p.exists() for p in older + old + current)
    assert build(PlotInference()) == set()

    # Results of other configurations: by count (the newest of each stage stay), then by age.
    out = _gc(capsys, "--unused", "--keep-last", "1", "--yes")
    assert "Removing 5 (" in out, out  # and the staging folder no run holds now, and the lock its killed holder left
    assert not any(p.exists() for p in [*older, busy]) and all(p.exists() for p in old + current)
    out = _gc(capsys, "--unused", "--older-than", "1")
    assert "Nothing to remove: no leftovers and no result chosen." in out
    _gc(capsys, "--unused", "--older-than", "0", "--yes")
    assert not any(p.exists() for p in old) and all(p.exists() for p in current)
    assert build(PlotInference()) == set()


def test_listing_creates_no_lock_folder(workspace: Path) -> None:
    # A staging folder nobody writes, in a root without `.locks`: listed as a leftover, and the
    # listing (a dry run) asks whether its lock is held without creating the lock folder.
    staging = publish.staging_path(TrainEstimator().output_dir())
    staging.mkdir(parents=True)
    entries = cleanup.scan({}, set())
    assert [(entry.path, entry.kind) for entry in entries] == [(staging, "staging")]
    assert not (workspace / ".locks").exists()


class Failing(Stage):
    """A test stage that writes part of its output, then fails."""

    artifact_kind = "reports"
    resumable_here = luigi.BoolParameter(default=False)

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        return bool(self.resumable_here)

    def folder_prefix(self) -> str:
        return "failing"

    def build(self, staging: Path) -> dict[str, Any]:
        (staging / "half.txt").write_text("half of it")
        raise RuntimeError("failed half-way")


@pytest.mark.parametrize("resumable", [False, True])
def test_a_failed_stage_leaves_staging_only_when_it_can_resume(workspace: Path, resumable: bool) -> None:
    task = Failing(resumable_here=resumable)
    with pytest.raises(RuntimeError, match="failed half-way"):
        task.run()
    staging = publish.staging_path(task.output_dir())
    assert staging.exists() == resumable
    assert not task.output_dir().exists()
