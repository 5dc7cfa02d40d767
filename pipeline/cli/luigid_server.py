"""`luigid` as `make scheduler` runs it: Luigi's scheduler, with each running task's progress in its row.

Luigi's web UI lists a task's parameters in its row of the task list, and its
progress (percentage and status message) only behind the row's button. This
is Luigi's own `luigid` command, whose scheduler adds a `progress` entry
(`42% step 600/1500: loss 0.012, 31.5 steps/s, ETA 0:29`) to the parameters
it sends for a running task that reported progress, so that the list shows
the step and the ETA of every running stage at a glance. Nothing else
changes: the task's own parameters, ids and state are Luigi's.

    python -m pipeline.cli.luigid_server [luigid's options]
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import luigi.cmdline
import luigi.scheduler

PROGRESS = "progress"  # the entry the task list shows


def progress_text(record: dict[str, Any]) -> str | None:
    """`42% message` of a serialized task that is running and reported progress, else None."""
    if record.get("status") != luigi.scheduler.RUNNING:
        return None
    percentage, message = record.get("progress_percentage"), record.get("status_message")
    if percentage is None and not message:
        return None
    shown = f"{percentage:g}%" if isinstance(percentage, (int, float)) else ""
    return " ".join(part for part in (shown, str(message or "")) if part)


def install() -> None:
    """Make the scheduler's serialized tasks carry their progress among their parameters. Idempotent."""
    serialize: Callable[..., dict[str, Any]] = luigi.scheduler.Scheduler._serialize_task
    if getattr(serialize, "shows_progress", False):
        return

    def _serialize_task(self: luigi.scheduler.Scheduler, task_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        record = serialize(self, task_id, *args, **kwargs)
        text = progress_text(record)
        if text is not None:
            record["params"] = {**record.get("params", {}), PROGRESS: text}
        return record

    _serialize_task.shows_progress = True  # type: ignore[attr-defined]
    luigi.scheduler.Scheduler._serialize_task = _serialize_task  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    """Run luigid with `argv` (its own options), progress shown in the task list."""
    install()
    # Importing `pipeline` gave the root logger a NullHandler (pipeline/__init__.py), with which
    # logging.basicConfig would not write luigid's log (<logdir>/luigi-server.log).
    for handler in [h for h in logging.root.handlers if isinstance(h, logging.NullHandler)]:
        logging.root.removeHandler(handler)
    luigi.cmdline.luigid(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
