"""Crash in every phase: a SIGKILL inside each phase of the stages' work (bench/crash_trials.py, short)."""

from __future__ import annotations

from pathlib import Path

from bench.crash_trials import run_trials, summary_line
from pipeline.runtime import phases
from tests.conftest import Config

# Where a kill aimed at a phase may land instead when the stage's timer fires late: the next phase.
NEXT = {"train": "checkpoint", "checkpoint": "train"}


def test_a_sigkill_in_each_phase_loses_nothing(tmp_path: Path, config: Config) -> None:
    # One trial per phase. Each record lists the invariants its trial broke: a published
    # folder with a missing marker or file, a rerun that fails, an output unlike the
    # uninterrupted run's, a training that does not resume from its last checkpoint or
    # loses more than one interval, a complete staging folder that is not published as is.
    records = run_trials(tmp_path, trials=len(phases.PHASES), seed=1, set_option=config.set, within=0.5)
    print(summary_line(records))
    assert [r["violations"] for r in records] == [[]] * len(phases.PHASES)
    aimed = [r["target"].split(":")[0] for r in records]
    assert aimed == list(phases.PHASES)
    for record, target in zip(records, aimed, strict=True):
        # Killed inside the phase it aimed at (its phase log says so), not after the stage was done.
        assert record["phase"] in (target, NEXT.get(target)), record
