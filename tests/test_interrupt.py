"""Ctrl-C and SIGTERM are a pause (pipeline/cli/interruption.py, training/process.py): a real signal
sent to a real `luigi` process, against a real luigid and with --local-scheduler; and a run the
scheduler refuses says why and exits non-zero (cli/results.py)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from pipeline.core import markers
from tests.scheduler import Luigid, running_luigid, start_luigi, write_run_config

# Long enough to be interrupted on any machine, short steps so that checkpoints come quickly.
LONG_TRAINING = {"max_steps": "30000", "checkpoint_steps": "1000"}
PAUSE_LINE = re.compile(
    r"^TrainEstimator interrupted at step (\d+)/30000; the same command resumes from its checkpoint at step (\d+)$",
    re.MULTILINE,
)
STARTUP_LINES = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")


def _wait_for_checkpoint(root: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the training's staging folder holds a checkpoint (the run must still be going)."""
    deadline = time.monotonic() + 300
    while not list((root / "models").glob("*.partial*/checkpoints/checkpoint")):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def _progress_in_task_list(scheduler: Luigid) -> str:
    """The `progress` entry of the running TrainEstimator's parameters in the web UI's task list."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for task in scheduler.tasks("RUNNING").values():
            if task["name"] == "TrainEstimator" and "step" in task["params"].get("progress", ""):
                return str(task["params"]["progress"])
        time.sleep(0.5)
    raise AssertionError(f"no progress in the task list: {scheduler.tasks()}")


def _assert_paused(log: str, code: int) -> tuple[int, int]:
    """The pause as a user sees it; returns (step reached, checkpoint step)."""
    assert code == 130, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-5000:]
    (match,) = PAUSE_LINE.finditer(log)
    reached, saved = int(match[1]), int(match[2])
    assert 1000 <= saved <= reached < 30000 and saved % 1000 == 0
    block = log[match.end() :]
    assert "===== Results =====" in block
    assert re.search(r"TrainEstimator +\S+/models/sine-mlp-\w{12}  not done", block), block
    assert "TrainEstimator interrupted after" in log  # the stage's own line
    return reached, saved


def test_ctrl_c_against_luigid_is_a_pause_and_the_same_command_resumes_at_once(tmp_path: Path) -> None:
    write_run_config(tmp_path, LONG_TRAINING)
    with running_luigid(tmp_path / "luigid") as scheduler:
        first = start_luigi(["TrainEstimator", *scheduler.cli(), "--name", "paused"], tmp_path, tmp_path / "log1")
        _wait_for_checkpoint(tmp_path, first, tmp_path / "log1")
        progress = _progress_in_task_list(scheduler)  # the step and the ETA, in the row itself
        assert re.match(r"\d+(\.\d+)?% step \d+/30000: .*ETA \d+:\d\d", progress), progress
        first.send_signal(signal.SIGINT)
        code = first.wait(timeout=120)
        log = (tmp_path / "log1").read_text()
        reached, saved = _assert_paused(log, code)
        assert not any(line in log for line in STARTUP_LINES), log[:3000]  # TensorFlow's C++ start-up lines
        # Given back: the scheduler no longer counts it as running (nor its gpu unit as taken).
        (training,) = scheduler.by_family()["TrainEstimator"]
        assert training["status"] in ("FAILED", "PENDING"), training
        pools = {pool["name"]: pool for pool in scheduler.api("resource_list")}
        assert pools["gpu"]["num_used"] == 0, pools

        second = start_luigi(["TrainEstimator", *scheduler.cli()], tmp_path, tmp_path / "log2")
        assert second.wait(timeout=600) == 0, (tmp_path / "log2").read_text()[-3000:]
    log = (tmp_path / "log2").read_text()
    assert "resumes from the staging folder" in log and "marked as running by disconnected worker" not in log
    (model,) = (tmp_path / "models").glob("sine-mlp-*")
    marker = markers.read_marker(model)
    assert marker is not None
    assert marker["info"]["resumed_from_step"] == saved, (reached, saved, marker["info"])
    assert marker["info"].get("run") is None  # --name went with the run that was interrupted, not this one


def test_sigterm_is_the_same_pause(tmp_path: Path) -> None:
    write_run_config(tmp_path, LONG_TRAINING)
    proc = start_luigi(["TrainEstimator", "--local-scheduler"], tmp_path, tmp_path / "log")
    _wait_for_checkpoint(tmp_path, proc, tmp_path / "log")
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    _, saved = _assert_paused((tmp_path / "log").read_text(), code)
    (staging,) = (tmp_path / "models").glob("sine-mlp-*.partial*")
    assert (staging / "checkpoints" / f"ckpt-{saved}.index").is_file()  # what the same command resumes from


def test_a_refused_rerun_exits_non_zero_and_says_why(tmp_path: Path) -> None:
    """After a failure luigid disables the stage: the same command run again is told so, and when it is
    re-enabled, instead of Luigi's `not granted run permission` and exit 0."""
    write_run_config(tmp_path)
    diverging = ["TrainEstimator", "--TrainEstimator-learning-rate", "1e30"]
    with running_luigid(tmp_path / "luigid") as scheduler:
        failed = start_luigi([*diverging, *scheduler.cli()], tmp_path, tmp_path / "log1")
        assert failed.wait(timeout=600) == 30, (tmp_path / "log1").read_text()[-3000:]
        refused = start_luigi([*diverging, *scheduler.cli()], tmp_path, tmp_path / "log2")
        code = refused.wait(timeout=600)
        assert scheduler.by_family("DISABLED")["TrainEstimator"]
    log = (tmp_path / "log2").read_text()
    assert code == 30, log[-3000:]  # [retcode] task_failed
    (line,) = [line for line in log.splitlines() if line.startswith("TrainEstimator was not run: ")]
    assert f"the scheduler at {scheduler.url} disabled it after it failed at " in line
    assert "Training diverged: the loss is nan" in line
    assert "It re-enables it 10 s after that ([scheduler] disable_persist)" in line
    assert f"or click Re-enable on its row in the web UI ({scheduler.url})" in line
