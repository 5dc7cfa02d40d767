"""Ctrl-C against luigid, then the same command at once: how long each part takes.

    python -m bench.interrupt_rerun

Starts a luigid on a free loopback port, a training long enough to interrupt, sends it
SIGINT after its first checkpoint, and starts the same command as soon as the first has
exited. Prints: the seconds from SIGINT to the exit (and its code), the seconds from the
rerun's start to its worker running TrainEstimator (Luigi alone: about 60 s, the time
luigid takes to miss the interrupted worker), and the step the rerun resumed from.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import load, machine
from pipeline.cli import luigid

VENV_BIN = Path(sys.executable).parent
CONFIG = "[paths]\nroot = .\n[TrainEstimator]\nbatch_size = 64\nmax_steps = 30000\ncheckpoint_steps = 1000\n"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _luigi(folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [str(VENV_BIN / "luigi"), "--module", "pipeline", "TrainEstimator", "--scheduler-port", str(port)]
    with open(log, "wb") as out:  # SIGINT as at a terminal, also when this was started in the background
        return subprocess.Popen(
            command,
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> float:
    """Seconds until `pattern` appears in `log` (the process must not end first)."""
    started = time.monotonic()
    while not re.search(pattern, log.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() - started > timeout:
            raise SystemExit(f"{pattern!r} never came:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return time.monotonic() - started


def main() -> None:
    print(machine(), load())
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "luigi.cfg").write_text(CONFIG)
        port = _port()
        luigid.start(folder / "luigid", port=port)
        try:
            first = _luigi(folder, port, folder / "log1")
            while not list((folder / "models").glob("*.partial*/checkpoints/checkpoint")):
                if first.poll() is not None:
                    raise SystemExit((folder / "log1").read_text()[-3000:])
                time.sleep(0.1)
            interrupted = time.monotonic()
            first.send_signal(signal.SIGINT)
            code = first.wait()
            stopped = time.monotonic() - interrupted
            print(f"SIGINT to exit: {stopped:.1f} s (exit code {code})")
            line = re.search(r"^TrainEstimator interrupted at .*$", (folder / "log1").read_text(), re.MULTILINE)
            print(f"  {line[0] if line else 'no pause line'}")
            if code != 130:
                raise SystemExit("the training was not interrupted: no rerun to time")
            second = _luigi(folder, port, folder / "log2")
            waited = _wait_for(folder / "log2", r"running +TrainEstimator", second)
            print(f"rerun start to TrainEstimator running: {waited:.1f} s")
            _wait_for(folder / "log2", r"step (\d+)/30000: training, resumed", second)
            resumed = re.search(r"step (\d+)/30000: training, resumed", (folder / "log2").read_text())
            print(f"  resumed from step {resumed[1] if resumed else '?'}")
            second.send_signal(signal.SIGINT)
            second.wait()
        finally:
            luigid.stop(folder / "luigid")


if __name__ == "__main__":
    main()
