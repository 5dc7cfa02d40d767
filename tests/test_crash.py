"""Crash anywhere: 20 SIGKILLs at seeded random moments over the four stages (bench/crash_trials.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.crash_trials import STAGE_ORDER, run_trials
from tests.conftest import Config


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, config: Config) -> None:
    # run_trials raises on the first broken invariant: a published folder
    # with a missing marker or file, a rerun that fails, an output unlike the
    # uninterrupted run's, or a training that does not resume from its last checkpoint.
    records = run_trials(tmp_path, trials=20, seed=0, set_option=config.set)
    assert len(records) == 20
    assert Counter(r["stage"] for r in records) == {name: 5 for name in STAGE_ORDER}
    assert sum(not r["finished_before_kill"] for r in records) >= 15  # most kills land mid-stage
