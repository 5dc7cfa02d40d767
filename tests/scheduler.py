"""Test helpers for a real `luigid`: on a free loopback port, with its state in a
temporary folder, read back through its HTTP API, and always stopped after."""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote
from urllib.request import urlopen

from pipeline.cli import luigid
from pipeline.cli.scheduler import scheduler_url
from tests.conftest import PROJECT_DIR, SMALL_TRAINING, VENV_BIN


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Luigid:
    """A running luigid and its API (the calls its web UI makes)."""

    def __init__(self, folder: Path, port: int, pid: int) -> None:
        self.folder, self.port, self.pid = folder, port, pid
        self.url = scheduler_url(port=port)

    def api(self, method: str, **arguments: Any) -> Any:
        with urlopen(f"{self.url}api/{method}?data={quote(json.dumps(arguments))}", timeout=10) as page:
            return json.load(page)["response"]

    def tasks(self, status: str = "") -> dict[str, dict[str, Any]]:
        """Task id -> the scheduler's record of it (status, status_message, progress_percentage, ...)."""
        return self.api("task_list", status=status, upstream_status="", search="")

    def by_family(self, status: str = "") -> dict[str, list[dict[str, Any]]]:
        families: dict[str, list[dict[str, Any]]] = {}
        for task in self.tasks(status).values():
            families.setdefault(task["name"], []).append(task)
        return families

    def cli(self) -> list[str]:
        """The luigi command-line flags that point a run at this scheduler."""
        return ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(self.port)]


@contextlib.contextmanager
def running_luigid(folder: Path, resources: dict[str, int] | None = None) -> Iterator[Luigid]:
    """Start luigid on a free port reading the project's luigi.cfg (with `resources` pools
    overriding its own); stop it on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    config = PROJECT_DIR / "luigi.cfg"
    if resources:
        parser = configparser.ConfigParser()
        parser.read(config)
        parser["resources"] = {name: str(amount) for name, amount in resources.items()}
        config = folder / "luigi.cfg"
        with open(config, "w") as f:
            parser.write(f)
    port = free_port()
    pid = luigid.start(folder, port=port, config=config)
    assert pid is not None, f"something else answers at port {port}"
    try:
        yield Luigid(folder, port, pid)
    finally:
        luigid.stop(folder)


def write_run_config(folder: Path, train: dict[str, str] | None = None) -> None:
    """A luigi.cfg in `folder`, the working directory of the runs: small training settings.

    `luigi` commands run there read it after the project's, so its values win.
    """
    parser = configparser.ConfigParser()
    parser["paths"] = {"root": "."}  # relative to this file: `folder` is the artifact root
    parser["TrainEstimator"] = {**SMALL_TRAINING, **(train or {})}
    with open(folder / "luigi.cfg", "w") as f:
        parser.write(f)


def _default_sigint() -> None:
    # A process started in the background of a shell (`make test &`) ignores SIGINT, and so do
    # its children: Python then never raises KeyboardInterrupt. The run is Ctrl-C's as at a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_luigi(args: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `luigi --module pipeline ...` in `cwd`, its output into `log` (SIGINT ends it as Ctrl-C would)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(VENV_BIN / "luigi"), "--module", "pipeline", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_default_sigint,
        )
