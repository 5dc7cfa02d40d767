"""The progress of the running stage at the console (standard library only).

The scheduler's web UI shows a stage's progress behind a click; the console is
where a person running `luigi ... --local-scheduler` looks. `Stage.progress()`
reports here as well as to the scheduler:

- on a terminal (stderr is a TTY), one live line: a bar, the percentage, the
  time the stage has run and its last message, redrawn in place every
  `REDRAW_SECONDS` (so the clock moves between messages) and replaced by a
  final line when the stage ends;
- otherwise (a log file, a pipe, CI), one compact line per message through
  Luigi's logger, and a line saying the stage is still running whenever it
  has been quiet for `HEARTBEAT_SECONDS`.

A process runs one stage at a time (Luigi's worker, or one of its worker
processes with `--workers N`, which then all write lines: several live bars
would overwrite each other).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from pipeline.runtime.clock import duration

logger = logging.getLogger("luigi-interface")

REDRAW_SECONDS = 0.5  # the live bar's clock
HEARTBEAT_SECONDS = 30.0  # the longest a log stays silent while a stage runs
BAR_WIDTH = 20
CLEAR_LINE = "\r\x1b[K"


def bar(fraction: float, width: int = BAR_WIDTH, unicode: bool = True) -> str:
    """A text progress bar of `width` cells, `fraction` (clipped to [0, 1]) of them full."""
    full = round(min(max(fraction, 0.0), 1.0) * width)
    filled, empty = ("█", "░") if unicode else ("#", "-")
    return filled * full + empty * (width - full)


def is_live(stream: TextIO) -> bool:
    """Whether to draw a live bar on `stream`: a terminal, and this process alone runs stages."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    # Luigi's worker processes (--workers N) share the terminal: lines, not bars that overwrite each other.
    return terminal and multiprocessing.parent_process() is None


class Display:
    """The console view of the stage this process runs: a live bar or log lines."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._name: str | None = None
        self._stream: TextIO = sys.stderr
        self._live = False
        self._drawn = False  # a live bar is on the screen (log records clear it first)
        self._started = self._last_output = 0.0
        self._fraction = 0.0
        self._message = ""
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- the stage's life ---

    def start(self, name: str, stream: TextIO | None = None) -> None:
        """A stage starts running in this process."""
        with self._lock:
            if self._name is not None:
                self.finish(ok=True)
            self._name, self._stream = name, stream or sys.stderr
            self._live = is_live(self._stream)
            self._started = self._last_output = time.monotonic()
            self._fraction, self._message = 0.0, "started"
            self._stop.clear()
            if self._live:
                _install_log_filter()
                self._draw()
        self._ticker = threading.Thread(target=self._tick, name=f"console-{name}", daemon=True)
        self._ticker.start()

    def update(self, fraction: float, message: str) -> None:
        """The stage reports progress: redraw the bar, or write one line."""
        with self._lock:
            if self._name is None:
                return
            self._fraction, self._message = fraction, message
            if self._live:
                self._draw()
            else:
                self._line(f"{self._name} {round(100 * fraction):3d}% [{self._elapsed()}] {message}")

    def finish(self, ok: bool, interrupted: bool = False) -> None:
        """The stage ended (or was interrupted): leave one line saying how, and stop the clock."""
        self._stop.set()
        ticker, self._ticker = self._ticker, None
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=2 * REDRAW_SECONDS)
        with self._lock:
            if self._name is None:
                return
            if ok:  # its last message, when it is the final word (100 %), not a phase it went through
                text = f"{self._name} done in {self._elapsed()}" + (f": {self._message}" if self._fraction >= 1 else "")
            else:
                how = "interrupted" if interrupted else "failed"
                text = f"{self._name} {how} after {self._elapsed()}, at: {self._message}"
            if self._live:
                self._write(CLEAR_LINE + text + "\n")
                self._drawn = False
            else:
                self._line(text)
            self._name = None

    # --- drawing ---

    def _elapsed(self) -> str:
        return duration(time.monotonic() - self._started)

    def _draw(self) -> None:
        unicode = (getattr(self._stream, "encoding", "") or "").lower().replace("-", "").startswith("utf")
        width = shutil.get_terminal_size((100, 24)).columns
        cells = BAR_WIDTH if width >= 120 else BAR_WIDTH // 2  # leave a narrow terminal room for the message
        text = (
            f"{self._name} {bar(self._fraction, cells, unicode)} {round(100 * self._fraction):3d}% "
            f"{self._elapsed()}  {self._message}"
        )
        if len(text) >= width:  # one screen line, or the carriage return cannot redraw it
            text = text[: max(width - 2, 10)] + "…"
        self._write(CLEAR_LINE + text)
        self._drawn = True

    def clear(self) -> None:
        """Take the live bar off its line (before another line is written there)."""
        with self._lock:
            if self._drawn:
                self._write(CLEAR_LINE)
                self._drawn = False

    def _line(self, text: str) -> None:
        logger.info(text)
        self._last_output = time.monotonic()

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed or broken console must not fail the stage
            self._stream.write(text)
            self._stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(REDRAW_SECONDS):
            with self._lock:
                if self._name is None:
                    return
                if self._live:
                    self._draw()
                elif time.monotonic() - self._last_output >= HEARTBEAT_SECONDS:
                    self._line(f"{self._name} still running [{self._elapsed()}], last: {self._message}")


_display = Display()


class _ClearBarFilter(logging.Filter):
    """Clears the live bar before a Luigi log record is written on its line (the bar is redrawn after)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _display.clear()
        return True


def _install_log_filter() -> None:
    if not any(isinstance(f, _ClearBarFilter) for f in logger.filters):
        logger.addFilter(_ClearBarFilter())


@contextlib.contextmanager
def running(name: str) -> Iterator[None]:
    """Show the stage `name` as running for the duration of the block, then how it ended."""
    _display.start(name)
    try:
        yield
    except BaseException as error:
        _display.finish(ok=False, interrupted=isinstance(error, KeyboardInterrupt))
        raise
    _display.finish(ok=True)


def progress(fraction: float, message: str) -> None:
    """Report the running stage's progress (`fraction` of its work done) at the console."""
    _display.update(fraction, message)
