"""Which phase of its work a stage is in, for the crash trials (standard library only).

A stage marks its phases (`with phase("checkpoint"): ...`): writing shards,
training between checkpoints, saving a checkpoint, exporting, publishing,
evaluating, plotting. Outside a crash trial this costs one environment lookup.
`bench/crash_trials.py` sets two variables in the stage's environment:

- `PIPELINE_PHASE_LOG`: a file that gets one line per boundary,
  `<begin|end> <phase> <occurrence> <seconds since the epoch>`, written and
  flushed at once, so the lines before a SIGKILL are on disk (the trials
  read it back: this module only writes it);
- `PIPELINE_CRASH_AT=<phase>:<occurrence>:<seconds>`: on entering that
  occurrence (1-based) of that phase, the process SIGKILLs itself after that
  many seconds (0: at once, in the calling thread).

The stage arms its own kill, rather than the trial harness killing it after
watching the log, because some windows are milliseconds wide (a checkpoint
save) or narrower (between the marker and the publishing rename): a harness
that polls the log would land after them. SIGKILL from inside is the same
signal as from outside: nothing runs after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

PHASES = ("etl", "train", "checkpoint", "export", "publish", "evaluate", "plot")
LOG_ENV = "PIPELINE_PHASE_LOG"
CRASH_ENV = "PIPELINE_CRASH_AT"

_occurrences: Counter[str] = Counter()
_lock = threading.Lock()


def begin(name: str) -> None:
    """Mark the start of phase `name` (one of `PHASES`)."""
    if name not in PHASES:
        raise ValueError(f"Unknown phase. Expected one of {', '.join(PHASES)}. Received: name={name!r}")
    log, crash = os.environ.get(LOG_ENV), os.environ.get(CRASH_ENV)
    if not log and not crash:
        return
    with _lock:
        _occurrences[name] += 1
        occurrence = _occurrences[name]
    if log:
        _write(log, f"begin {name} {occurrence} {time.time():.6f}\n")
    if crash:
        _arm(crash, name, occurrence)


def end(name: str) -> None:
    """Mark the end of phase `name`."""
    log = os.environ.get(LOG_ENV)
    if log:
        _write(log, f"end {name} {_occurrences[name]} {time.time():.6f}\n")


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """`begin(name)` on the way in, `end(name)` on the way out (also when it raises)."""
    begin(name)
    try:
        yield
    finally:
        end(name)


def _write(path: str, line: str) -> None:
    # O_APPEND: one write() per line, so the writer processes of a stage can share the file.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _arm(spec: str, name: str, occurrence: int) -> None:
    try:
        target, count, seconds = spec.split(":")
        if (target, int(count)) != (name, occurrence):
            return
        delay = float(seconds)
    except ValueError:
        raise ValueError(f"{CRASH_ENV} must be <phase>:<occurrence>:<seconds>. Received: {spec!r}") from None
    if delay <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
