"""Progress at the console (pipeline/runtime/console.py): a live bar on a terminal, lines in a log, never silent.

The last test runs the real `luigi` command on a pseudo-terminal, from a folder
other than the project's, and reads what a person sees: the bar, the training
messages, and the results block at the end.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from pipeline import layout
from pipeline.runtime import clock, console
from tests.conftest import PROJECT_DIR, SMALL_TRAINING, VENV_BIN


def test_duration_and_bar() -> None:
    assert [clock.duration(s) for s in (0, 59.4, 61, 3599, 3600, 3725)] == [
        "0:00", "0:59", "1:01", "59:59", "1:00:00", "1:02:05",
    ]  # fmt: skip
    assert console.bar(0.25, width=8) == "██░░░░░░"
    assert console.bar(1.7, width=4, unicode=False) == "####"
    assert console.bar(-1, width=4, unicode=False) == "----"


class FakeTerminal(io.StringIO):
    """What a stage writes to a terminal (isatty), kept as text."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def test_log_lines_and_a_heartbeat_when_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(console, "REDRAW_SECONDS", 0.02)
    monkeypatch.setattr(console, "HEARTBEAT_SECONDS", 0.15)
    display = console.Display()
    with caplog.at_level(logging.INFO, logger="luigi-interface"):
        display.start("TrainEstimator", io.StringIO())
        display.update(0.25, "step 50/200: loss 0.5")
        time.sleep(0.6)  # quiet for more than a heartbeat: the log says it still runs
        display.update(1.0, "step 200/200: loss 0.1")
        display.finish(ok=True)
    lines = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"TrainEstimator  25% \[0:00\] step 50/200: loss 0.5", lines[0])
    heartbeats = [line for line in lines if "still running" in line]
    assert 2 <= len(heartbeats) <= 5, lines  # one every 0.15 s of silence (4), not one every redraw (30)
    assert all(line.endswith("last: step 50/200: loss 0.5") for line in heartbeats)
    assert re.fullmatch(r"TrainEstimator 100% \[0:0\d\] step 200/200: loss 0.1", lines[-2])
    assert re.fullmatch(r"TrainEstimator done in 0:0\d: step 200/200: loss 0.1", lines[-1])


def test_live_bar_on_a_terminal_redraws_in_place_and_leaves_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "REDRAW_SECONDS", 0.02)
    monkeypatch.setenv("COLUMNS", "160")
    terminal = FakeTerminal()
    display = console.Display()
    display.start("CreateShards", terminal)
    display.update(0.4, "train: wrote shard 2 of 5")
    time.sleep(0.2)  # the clock redraws the bar meanwhile
    display.finish(ok=False)
    frames = terminal.getvalue().split(console.CLEAR_LINE)
    shards = [f for f in frames if "wrote shard 2 of 5" in f]
    assert len(shards) >= 3  # redrawn, not only drawn once
    assert shards[0] == "CreateShards ████████░░░░░░░░░░░░  40% 0:00  train: wrote shard 2 of 5"
    assert "\n" not in "".join(frames[:-1])  # all on one line until the end
    assert frames[-1] == "CreateShards failed after 0:00, at: train: wrote shard 2 of 5\n"


def test_a_log_record_clears_the_bar_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "REDRAW_SECONDS", 10)
    terminal = FakeTerminal()
    monkeypatch.setattr(console, "_display", console.Display())
    console._display.start("PlotInference", terminal)
    logging.getLogger("luigi-interface").warning("something")
    written = terminal.getvalue()
    console._display.finish(ok=True)
    assert written.endswith(" started" + console.CLEAR_LINE)


# --- the real command on a pseudo-terminal -------------------------------------------------


def _run_on_terminal(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """Run a command with stdout and stderr on a new pseudo-terminal (160 columns); its exit code and output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the last writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=10), b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the project (package and luigi.cfg: `root = .`) and an environment that runs it, training small."""
    proj = tmp_path / "proj"
    shutil.copytree(PROJECT_DIR / "pipeline", proj / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_DIR / "luigi.cfg", proj / "luigi.cfg")
    small = tmp_path / "small.cfg"  # read last (LUIGI_CONFIG_PATH); it sets no [paths]
    small.write_text("[TrainEstimator]\n" + "".join(f"{k} = {v}\n" for k, v in SMALL_TRAINING.items()))
    env = dict(os.environ, PYTHONPATH=str(proj), LUIGI_CONFIG_PATH=str(small), TF_CPP_MIN_LOG_LEVEL="2")
    env["COLUMNS"] = "160"
    return proj, env


def test_a_run_at_the_terminal_from_another_folder(project: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    proj, env = project
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    luigi = [str(VENV_BIN / "luigi"), "--module", "pipeline", "PlotInference", "--local-scheduler"]
    code, out = _run_on_terminal(luigi, elsewhere, env)
    assert code == 0, out[-3000:]
    # The results are in the project's root, whichever folder the command ran in.
    assert list(elsewhere.iterdir()) == []
    (model_dir,) = (proj / "models").glob("sine-mlp-*")
    (eval_dir,) = (proj / "reports").glob("sine-mlp-eval-*")
    history = {h["step"]: h for h in json.loads((model_dir / layout.HISTORY).read_text())}

    # A live bar: redrawn in place (carriage return, clear line), its clock moving while TensorFlow loads
    # and before the first evaluation (the message is "started", then "step 0/200: training").
    frames = [frame for frame in out.split(console.CLEAR_LINE) if frame.startswith("TrainEstimator ")]
    clock = {m[1] for f in frames if (m := re.match(r"TrainEstimator \S+ +0% (\d+:\d\d)  (started|step 0/)", f))}
    assert len(clock) >= 2, frames[:5]
    # At every evaluation: step of max, train loss, eval loss, steps/s, ETA; the losses those of history.json.
    shown = {}
    for frame in frames:
        m = re.search(r"step (\d+)/200: loss (\S+), eval loss (\S+), ([\d.]+) steps/s, ETA (\d+:\d\d)", frame)
        if m:
            shown[int(m[1])] = (m[2], m[3], float(m[4]), m[5])
    assert sorted(shown) == [100, 200]
    for step, (loss, eval_loss, rate, _eta) in shown.items():
        assert (loss, eval_loss) == (f"{history[step]['train']['loss']:.4g}", f"{history[step]['eval']['loss']:.4g}")
        assert rate > 0
    assert shown[200][3] == "0:00"
    assert re.search(
        r"\nTrainEstimator done in \d+:\d\d: step 200/200: loss ", "\n" + out.replace(console.CLEAR_LINE, "\n")
    )

    # After Luigi's summary: the absolute root, each stage's folder, the validation metrics, what ran.
    assert out.index("===== Results =====") > out.rindex("===== Luigi Execution Summary =====")
    block = out[out.index("===== Results =====") :]
    assert f"Artifact root: {proj}\n" in block
    for stage_folder in (model_dir, eval_dir):
        assert re.search(rf"\S+\s+{re.escape(str(stage_folder))}  made now\n", block)
    metrics = json.loads((eval_dir / layout.METRICS).read_text())["validation"]
    assert f"mse {metrics['mse']:.4g}" in block and f"num_examples {metrics['num_examples']}" in block
    assert "Ran: CreateShards, TrainEstimator, EvaluateEstimator, PlotInference. Reused: nothing." in block

    # From a third folder, not on a terminal: a forced PlotInference reruns alone, in compact log lines.
    third = tmp_path / "third"
    third.mkdir()
    run = subprocess.run(
        [*luigi, "--PlotInference-force"], cwd=third, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"\nINFO: PlotInference  33% \[\d+:\d\d\] \S.*\n", run.stderr)  # its progress, in log lines
    assert "force did nothing" not in run.stderr
    assert re.search(r"\nINFO: PlotInference done in \d+:\d\d\n", run.stderr)
    assert console.CLEAR_LINE not in run.stderr
    assert f"TrainEstimator     {model_dir}  reused (made " in run.stdout
    assert "Ran: PlotInference. Reused: CreateShards, TrainEstimator, EvaluateEstimator." in run.stdout
    # A forced TrainEstimator above a complete PlotInference is never checked: a warning points to Repro.
    run = subprocess.run(
        [*luigi, "--TrainEstimator-force"], cwd=third, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "WARNING: --TrainEstimator-force did nothing: this run did not check TrainEstimator" in run.stderr
    assert "luigi --module pipeline Repro --TrainEstimator-force" in run.stderr
    assert "Ran: nothing. Reused: CreateShards, TrainEstimator, EvaluateEstimator, PlotInference." in run.stdout

    # status, from the third folder too: the same root, all up to date (exit 0); a change is stale (exit 1).
    status = [str(VENV_BIN / "python"), "-m", "pipeline", "status", "PlotInference"]
    up_to_date = subprocess.run(status, cwd=third, env=env, capture_output=True, text=True, timeout=60)
    assert up_to_date.returncode == 0, up_to_date.stderr
    assert up_to_date.stdout.startswith(f"Artifact root: {proj}\n") and up_to_date.stdout.count("up to date") == 4
    changed = [*status, "--TrainEstimator-learning-rate", "0.5"]
    stale = subprocess.run(changed, cwd=third, env=env, capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1, stale.stderr
    assert "parameter learning_rate changed from 0.01 to 0.5" in stale.stdout
