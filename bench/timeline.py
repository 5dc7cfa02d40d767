"""The timeline of one `luigi --module pipeline PlotInference --local-scheduler` run, from its console lines.

Each line the command prints is stamped with the seconds since the command
started, and the phases of issue 23's table are cut at lines every run prints:
Luigi's `running`/`done` lines of each stage, the training's `step 0/N` and
`step N/N` progress lines, the results block's last line (`Ran: ...`) and the
process's exit. The CPU seconds of the command (user + system, its own and its
waited-for children's) come from `os.wait4`.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# (label, the line that starts it, the line that ends it): regular expressions on the console lines.
PHASES = [
    ("Luigi, import pipeline, scheduling", None, r"running +CreateShards"),
    ("CreateShards", r"running +CreateShards", r"done +CreateShards"),
    ("TrainEstimator before its first step", r"running +TrainEstimator", r"TrainEstimator .* step 0/\d+"),
    ("training steps", r"TrainEstimator .* step 0/\d+", r"TrainEstimator .* step (\d+)/\1\b"),
    ("export", r"TrainEstimator .* step (\d+)/\1\b", r"done +TrainEstimator"),
    ("EvaluateEstimator", r"running +EvaluateEstimator", r"done +EvaluateEstimator"),
    ("PlotInference", r"running +PlotInference", r"done +PlotInference"),
    ("after the results block, to the exit", r"^Ran: ", None),
]


@dataclass
class Timeline:
    """One run: its stamped lines, its wall and CPU seconds, and the phases cut from them."""

    lines: list[tuple[float, str]] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    returncode: int = 0

    def first(self, pattern: str) -> float | None:
        """Seconds of the first line matching `pattern` (None when none does)."""
        found = re.compile(pattern)
        return next((t for t, line in self.lines if found.search(line)), None)

    def phases(self) -> dict[str, float | None]:
        """Each phase's seconds (None when one of its lines is missing)."""
        out: dict[str, float | None] = {}
        for label, start, end in PHASES:
            begin = 0.0 if start is None else self.first(start)
            finish = self.wall if end is None else self.first(end)
            out[label] = None if begin is None or finish is None else finish - begin
        return out

    def steps(self) -> int | None:
        """The training's number of steps (from its `step N/N` line)."""
        found = re.compile(r"TrainEstimator .* step (\d+)/\1\b")
        return next((int(m.group(1)) for _, line in self.lines if (m := found.search(line))), None)


def run(args: list[str], cwd: Path, env: dict[str, str]) -> Timeline:
    """Run `args` in `cwd`, stamping every line of its merged stdout and stderr."""
    timeline = Timeline()
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        timeline.lines.append((time.perf_counter() - started, raw.decode(errors="replace").rstrip("\n")))
    _, status, usage = os.wait4(proc.pid, 0)
    timeline.wall = time.perf_counter() - started
    proc.returncode = timeline.returncode = os.waitstatus_to_exitcode(status)
    timeline.cpu = usage.ru_utime + usage.ru_stime
    return timeline
