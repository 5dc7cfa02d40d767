"""`make scheduler` and `make scheduler-stop`: one luigid, on loopback, with its files in one folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil

from pipeline.cli import luigid
from pipeline.cli.scheduler import probe, scheduler_url
from tests.conftest import PROJECT_DIR
from tests.scheduler import free_port


def _make(target: str, port: int, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(PROJECT_DIR), target, f"SCHEDULER_PORT={port}", f"SCHEDULER_DIR={folder}"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_scheduler_starts_one_luigid_on_loopback_and_make_scheduler_stop_stops_it(tmp_path: Path) -> None:
    port, folder = free_port(), tmp_path / "luigid"
    url = scheduler_url(port=port)
    first = _make("scheduler", port, folder)
    try:
        assert first.returncode == 0, first.stderr
        assert f"its web UI: {url}" in first.stdout
        pid = int((folder / luigid.PID_FILE).read_text())
        assert probe(url) is None
        process = psutil.Process(pid)
        listening = {(c.laddr.ip, c.laddr.port) for c in process.net_connections("tcp") if c.status == "LISTEN"}
        assert listening == {("127.0.0.1", port)}  # loopback only: the UI has no login
        assert (folder / "luigi-server.log").exists()

        second = _make("scheduler", port, folder)  # a no-op
        assert second.returncode == 0, second.stderr
        assert f"A Luigi scheduler already answers at {url}" in second.stdout
        assert int((folder / luigid.PID_FILE).read_text()) == pid
        commands = {p.pid: " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])}
        assert [p for p, command in commands.items() if str(folder) in command] == [pid]  # no second luigid
    finally:
        stop = _make("scheduler-stop", port, folder)
    assert stop.returncode == 0, stop.stderr
    assert "Stopped luigid." in stop.stdout
    assert probe(url) == "Connection refused"
    assert not process.is_running()
    assert (folder / luigid.STATE_FILE).stat().st_size > 0  # it saved its state on the way out
    assert not (folder / luigid.PID_FILE).exists()

    again = _make("scheduler-stop", port, folder)
    assert again.returncode == 0 and "No luigid started from" in again.stdout
