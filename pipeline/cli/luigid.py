"""Starting and stopping one `luigid` for this project (`make scheduler`, `make scheduler-stop`).

    python -m pipeline.cli.luigid start|stop|status [--host 127.0.0.1] [--port 8082] [--dir var/luigid]

The scheduler binds to 127.0.0.1 by default: its web UI has no login. Its
pickled state, its log (`luigi-server.log`), its console output and its pid
file live in one folder under the project. It reads the project's luigi.cfg
(the `[resources]` pools and the `[scheduler]` section). `start` is a no-op
when a scheduler already answers at the address.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from pipeline.cli.scheduler import DEFAULT_HOST, DEFAULT_PORT, probe, scheduler_url
from pipeline.paths import PROJECT_DIR

DEFAULT_DIR = PROJECT_DIR / "var" / "luigid"
PID_FILE = "luigid.pid"
STATE_FILE = "state.pickle"
OUT_FILE = "luigid.out"  # stdout and stderr; the log proper is luigi-server.log beside it


def running(folder: Path) -> psutil.Process | None:
    """The luigid whose pid `folder` records, if it still runs."""
    try:
        process = psutil.Process(int((folder / PID_FILE).read_text()))
        if process.status() != psutil.STATUS_ZOMBIE and any("luigid" in part for part in process.cmdline()):
            return process
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def start(
    folder: Path = DEFAULT_DIR,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    config: Path | None = None,
    timeout: float = 60.0,
) -> int | None:
    """Start `luigid` on host:port with its files in `folder`, and wait until it answers.

    `config` is the luigi.cfg it reads (default: the project's). Returns the
    new process id, or None when a scheduler answered there already.
    """
    url = scheduler_url(host, port)
    if probe(url) is None:
        return None
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    stale = running(folder)
    if stale is not None:
        raise RuntimeError(
            f"The luigid started from {folder} (pid {stale.pid}) runs but does not answer at {url}. "
            "Stop it first: make scheduler-stop"
        )
    command = [  # Luigi's luigid, whose task list shows each running stage's progress (luigid_server.py)
        sys.executable,
        "-m",
        "pipeline.cli.luigid_server",
        *("--address", host, "--port", str(port)),
        *("--state-path", str(folder / STATE_FILE), "--logdir", str(folder)),
    ]
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config or PROJECT_DIR / "luigi.cfg"))
    with open(folder / OUT_FILE, "ab") as out:
        # A session of its own: it outlives `make` and the terminal's Ctrl-C.
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    (folder / PID_FILE).write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while (reason := probe(url, timeout=1.0)) is not None:
        if process.poll() is not None or time.monotonic() > deadline:
            stop(folder)
            output = (folder / OUT_FILE).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"luigid did not come up at {url} ({reason}). Its output:\n{output}")
        time.sleep(0.1)
    return process.pid


def stop(folder: Path = DEFAULT_DIR, timeout: float = 20.0) -> bool:
    """Stop the luigid `folder` records (SIGTERM: it saves its state first). True if one ran."""
    process = running(folder)
    if process is not None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    (folder / PID_FILE).unlink(missing_ok=True)
    return process is not None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.cli.luigid", description="Start or stop a luigid.")
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--host", default=DEFAULT_HOST, help="Address to bind to (default: loopback only).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="Folder of its state, log and pid file.")
    args = parser.parse_args(argv)
    url = scheduler_url(args.host, args.port)
    if args.command == "start":
        try:
            pid = start(args.dir, args.host, args.port)
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 1
        if pid is None:
            print(f"A Luigi scheduler already answers at {url} (its web UI).")
        else:
            print(f"Started luigid (pid {pid}); its web UI: {url}; state and log in {args.dir.resolve()}/")
    elif args.command == "stop":
        print("Stopped luigid." if stop(args.dir) else f"No luigid started from {args.dir} is running.")
    else:
        reason = probe(url)
        print(f"A Luigi scheduler answers at {url}" if reason is None else f"No Luigi scheduler at {url}: {reason}")
        return 0 if reason is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
