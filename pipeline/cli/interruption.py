"""Ctrl-C and SIGTERM during a `luigi` run: a pause, not a crash.

What it takes, and where:

- The stage that runs turns the interruption into one line saying where it
  stopped and how the same command goes on (`Stage.run`; the training names
  its step and its last checkpoint, training/process.py). cli/results.py
  prints that line and the results block, and the command exits with 130.
- SIGTERM (`kill`, a batch system ending a job) is made to do what Ctrl-C does
  while the command line's run is under way (`terminate_as_interrupt`).
- The stage is given back to the scheduler (`PausingWorker`). Luigi's worker
  lets a KeyboardInterrupt through without a word to the scheduler, which then
  counts the stage as running, and its `gpu` unit as taken, until it has missed
  the worker for `worker_disconnect_delay` (60 s); then it counts it as failed,
  which disables it (`[scheduler] retry_count = 1`). The same command run again
  meanwhile waits in silence. Here the worker reports the stage failed, with the
  line as its error, and re-enables it (as the web UI's Re-enable does): the next
  run that asks for it gets it at once.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import luigi.interface
import luigi.scheduler
import luigi.worker

from pipeline.cli.scheduler import ReconnectingScheduler

logger = logging.getLogger("luigi-interface")

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as the shell reports a command Ctrl-C ended (SIGTERM alike)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"terminated by {signal.Signals(signum).name}")


def terminate_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise KeyboardInterrupt in the main thread, as Ctrl-C does; returns what undoes it."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _terminated)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def give_back(scheduler: Any, worker_id: str, task: luigi.Task | None, task_id: str, why: str) -> None:
    """Tell `scheduler` that `task_id` no longer runs on this worker, so that a run may take it (and its
    resources) now: reported failed with `why` as its error, then re-enabled. One attempt each."""
    fields: dict[str, Any] = {
        "worker": worker_id,
        "task_id": task_id,
        "status": luigi.scheduler.FAILED,
        "expl": json.dumps(why),
        "runnable": False,
    }
    if task is not None:  # add_task sets what it is given: the stage's resources and names stay
        fields.update(resources=task.process_resources(), family=task.task_family, module=task.task_module)
    calls: list[tuple[str, dict[str, Any]]] = [("add_task", fields), ("re_enable_task", {"task_id": task_id})]
    try:
        for method, arguments in calls:
            if isinstance(scheduler, ReconnectingScheduler):
                scheduler.call_once(method, arguments)
            else:  # the in-process scheduler of --local-scheduler, which ends with this run
                getattr(scheduler, method)(**arguments)
    except Exception as error:  # the run is ending: one warning, never a second traceback
        logger.warning(
            "Could not give %s back to the scheduler (%s): it counts it as running for another minute.", task_id, error
        )


class PausingWorker(luigi.worker.Worker):
    """Luigi's worker, which gives the stages it was running back to the scheduler when it is interrupted."""

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> Any:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            for task_id in list(self._running_tasks):
                task = self._scheduled_tasks.get(task_id)
                give_back(self._scheduler, self._id, task, task_id, str(value) or "interrupted")
        return super().__exit__(kind, value, traceback)


def install() -> None:
    """Make every run's worker a PausingWorker (Luigi makes it in one factory method). Idempotent."""
    factory = luigi.interface._WorkerSchedulerFactory
    if getattr(factory.create_worker, "pauses", False):
        return

    def create_worker(self: Any, scheduler: Any, worker_processes: int, assistant: bool = False) -> PausingWorker:
        return PausingWorker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant)

    create_worker.pauses = True  # type: ignore[attr-defined]
    factory.create_worker = create_worker  # type: ignore[method-assign]
