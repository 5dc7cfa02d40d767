"""Trial processes: each runs one trial's DAG at a time, as `luigi --module pipeline TASK` would.

A search keeps up to `--workers` of them (`python -m pipeline.experiments.trials`),
started when a trial first needs one. Each imports TensorFlow once and runs trial
after trial in one process (a training of a few seconds is not dominated by a
ten-second import), with one Luigi worker: the trials' stages run one at a time in
it, as in `luigi --module pipeline TASK --workers 1`. A process that ends its trial
takes the next one at once; no trial waits for another's. It reads a trial as one
JSON line on its stdin (the Luigi command line, the variant, the log file), runs
`luigi.build` with that command line, and answers on its channel with Luigi's
status. Its output goes to the trial's log file. It dies with the search (orphans.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass
class Process:
    """One trial process, and the trial it runs (None when it is free)."""

    child: subprocess.Popen[bytes]
    channel: IO[str]
    trial: int | None = None


class Pool:
    """Up to `size` trial processes, started on demand."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.processes: list[Process] = []
        self.selector = selectors.DefaultSelector()

    def free(self) -> bool:
        """Whether a trial can start now (a process is free, or one more may be started)."""
        return len(self.processes) < self.size or any(p.trial is None for p in self.processes)

    def busy(self) -> int:
        return sum(p.trial is not None for p in self.processes)

    def start(self, trial: int, argv: list[str], variant: dict[str, Any], log: Path) -> None:
        """Run trial number `trial` (its Luigi command line `argv` and `variant`) in a free process."""
        process = next((p for p in self.processes if p.trial is None), None) or self._spawn()
        process.trial = trial
        request = {"trial": trial, "argv": argv, "variant": variant, "log": str(log)}
        assert process.child.stdin is not None
        process.child.stdin.write(json.dumps(request).encode() + b"\n")
        process.child.stdin.flush()

    def _spawn(self) -> Process:
        read_fd, write_fd = os.pipe()
        child = subprocess.Popen(
            [sys.executable, "-m", "pipeline.experiments.trials", str(write_fd), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        process = Process(child, os.fdopen(read_fd, encoding="utf-8"))
        self.processes.append(process)
        self.selector.register(process.channel, selectors.EVENT_READ, process)
        return process

    def finished(self, timeout: float | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(trial, answer) of each trial that ended, waiting up to `timeout` seconds for one."""
        for key, _ in self.selector.select(timeout):
            process: Process = key.data
            line = process.channel.readline()
            trial, process.trial = process.trial, None
            if not line:  # the process died (killed, out of memory): its trial failed
                self.selector.unregister(process.channel)
                self.processes.remove(process)
                code = process.child.wait()
                if trial is not None:
                    yield trial, {"status": "DIED", "error": f"its trial process ended with code {code}"}
                continue
            answer = json.loads(line)
            yield int(answer["trial"]), answer

    def close(self) -> None:
        """End every process (a trial still running is stopped with it)."""
        for process in self.processes:
            with contextlib.suppress(OSError):
                assert process.child.stdin is not None
                process.child.stdin.close()
            if process.trial is not None:
                process.child.kill()
        for process in self.processes:
            try:
                process.child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.child.kill()
                process.child.wait()
            process.channel.close()
        self.processes.clear()


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """This process's stdout and stderr (file descriptors 1 and 2) into `log` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def run_trial(argv: list[str], variant: dict[str, Any]) -> str:
    """Build TASK (argv[0]) with `variant` under the command line `argv`, with Luigi; Luigi's status name."""
    import luigi
    from luigi.cmdline_parser import CmdlineParser
    from luigi.task_register import Register

    with CmdlineParser.global_instance(argv):  # luigi.build reads the scheduler's flags there
        Register.clear_instance_cache()
        root = Register.get_task_cls(argv[0]).with_variant(variant)
        result = luigi.build([root], detailed_summary=True, workers=1)
    return str(result.status.name)


def main(argv: list[str]) -> int:
    """The trial process: one trial per line of stdin, one answer per trial on the channel."""
    from pipeline.runtime import orphans

    channel_fd, parent = int(argv[0]), int(argv[1])
    orphans.die_with_parent(parent, watch=True)
    import pipeline  # noqa: F401 (the tasks, the project's luigi.cfg)

    with os.fdopen(channel_fd, "w", buffering=1, encoding="utf-8") as channel:
        for line in sys.stdin:
            request = json.loads(line)
            answer: dict[str, Any] = {"trial": request["trial"]}
            with _output_to(Path(request["log"])):
                try:
                    answer["status"] = run_trial(request["argv"], request["variant"])
                except (Exception, SystemExit) as error:  # a parameter refused, the scheduler gone: the trial failed
                    answer.update(status="ERROR", error=f"{type(error).__name__}: {error}")
                    print(f"ERROR: {answer['error']}", file=sys.stderr)
            channel.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
