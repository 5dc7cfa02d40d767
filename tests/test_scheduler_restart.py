"""The central scheduler dies in the middle of a run (SIGKILL), against a real `luigid` on a free port.

Luigi retries a call `[core] rpc_retry_attempts` times, `rpc_retry_wait` seconds
apart (3 x 30 s by default, 12 x 5 s in the project's luigi.cfg); the runs here
retry every second, so that the test is short. The running stage is never held
up: its progress reports are not retried (pipeline/cli/scheduler.py).
"""

from __future__ import annotations

import configparser
import os
import signal
import time
from pathlib import Path

from pipeline.cli import luigid
from pipeline.core import markers
from tests.scheduler import Luigid, running_luigid, start_luigi, write_run_config

ALL = {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"}


def _retry_every_second(folder: Path, attempts: int) -> None:
    parser = configparser.ConfigParser()
    parser.read(folder / "luigi.cfg")
    parser["core"] = {"rpc_retry_attempts": str(attempts), "rpc_retry_wait": "1"}
    with open(folder / "luigi.cfg", "w") as f:
        parser.write(f)


def _kill_when_running(scheduler: Luigid, family: str, proc: object) -> None:
    """SIGKILL luigid as soon as it reports `family` running."""
    while proc.poll() is None:  # type: ignore[attr-defined]
        if any(task["name"] == family for task in scheduler.tasks("RUNNING").values()):
            os.kill(scheduler.pid, signal.SIGKILL)
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended before {family} ran")


def _restart(scheduler: Luigid) -> int:
    pid = luigid.start(scheduler.folder, port=scheduler.port)
    assert pid is not None, "something else answers at the port"
    return pid


def _check_published(root: Path) -> None:
    """Every folder outside staging has a valid marker, and no staging folder is left."""
    for kind in ("data/shards", "models", "reports"):
        for folder in (root / kind).glob("*"):
            assert not folder.name.endswith(".partial"), f"staging left: {folder}"
            assert markers.read_marker(folder) is not None, f"published without a valid marker: {folder}"


def test_a_killed_scheduler_ends_the_run_cleanly_and_a_restarted_one_lets_it_finish(tmp_path: Path) -> None:
    write_run_config(tmp_path, {"max_steps": "2000"})
    command = ["PlotInference"]
    with running_luigid(tmp_path / "luigid") as scheduler:
        # 1. Killed while training, not restarted: the training finishes and is published; the run
        #    then ends with one message after its retries (3 x 1 s), nothing published partially.
        _retry_every_second(tmp_path, attempts=3)
        first = start_luigi([*command, *scheduler.cli()], tmp_path, tmp_path / "first.log")
        _kill_when_running(scheduler, "TrainEstimator", first)
        code = first.wait(timeout=300)
        log = (tmp_path / "first.log").read_text()
        assert code == 40, log[-3000:]  # [retcode] unhandled_exception: the run could not go on
        assert "SchedulerLostError: The Luigi scheduler at" in log and "stopped answering" in log, log[-3000:]
        assert "run the same command" in log and "Traceback" not in log, log[-3000:]
        _check_published(tmp_path)
        assert [p.name.startswith("sine-mlp-") for p in (tmp_path / "models").iterdir()] == [True]
        assert not (tmp_path / "reports").exists()

        # 2. Started again, the same command; killed while evaluating and restarted two seconds later:
        #    the run registers its tasks again with the new luigid and completes.
        scheduler.pid = _restart(scheduler)
        _retry_every_second(tmp_path, attempts=30)
        second = start_luigi([*command, *scheduler.cli()], tmp_path, tmp_path / "second.log")
        _kill_when_running(scheduler, "EvaluateEstimator", second)
        time.sleep(2.0)
        scheduler.pid = _restart(scheduler)
        code = second.wait(timeout=300)
        log = (tmp_path / "second.log").read_text()
        assert code == 0, log[-3000:]
        assert "does not answer" in log and "registering this run's 4 tasks with it again" in log
        assert "Traceback" not in log
        # The new luigid knows the whole run: what finished before it started, and what ran after.
        assert {task["name"]: task["status"] for task in scheduler.tasks().values()} == dict.fromkeys(ALL, "DONE")
        ran = [line.split(" running   ")[1].split("(")[0] for line in log.splitlines() if " running   " in line]
        assert ran == ["EvaluateEstimator", "PlotInference"]  # shards and model were done by the first run
        _check_published(tmp_path)
        assert len(list((tmp_path / "reports").iterdir())) == 2

        # 3. The same command once more: everything is complete, nothing runs.
        third = start_luigi([*command, *scheduler.cli()], tmp_path, tmp_path / "third.log")
        assert third.wait(timeout=300) == 0
        assert " running   " not in (tmp_path / "third.log").read_text()
