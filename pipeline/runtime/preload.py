"""With `--workers N`, TensorFlow is imported once per Luigi worker, not once per task.

With N > 1, Luigi's worker process runs each task in a child it forks for that
task (`luigi.worker.TaskProcess`), and that worker process never imports
TensorFlow (`import pipeline` does not). So every stage that uses TensorFlow
imported it afresh in its own child: about 5 s each, 3 × N imports in a sweep
of N variants, and EvaluateEstimator or PlotInference took 11-16 s instead of
0.5-2.6 s.

`install()` makes the worker process the preloaded fork server: right before
it forks the child of the first stage that uses TensorFlow, it imports
TensorFlow and Keras itself, once, and every later child inherits them. That
is safe because the worker process never runs TensorFlow: the import starts
none of TensorFlow's runtime (no thread pool, no device, no CUDA; those start
with the first operation, in a child), and the only threads of the worker are
Luigi's keep-alive thread, which never forks (Luigi's fork lock), and
OpenBLAS's, which NumPy's own fork handlers cover. Each stage records in its
marker whether the runtime had started in the process it was forked from
(`runtime_started()`, tests/test_preload.py checks it is never so). With one
worker Luigi runs every task in the worker process itself, which imports
TensorFlow once anyway: nothing changes. Trainings on a GPU slot start a fresh
interpreter (training/process.py) whatever this process imported.

`imported()` says which process imported TensorFlow for the current one (its
pid and how long it took); stages record it in their marker.

What a forked stage still paid, against the same stage run in the process that
had just trained (issue 23, measured in forked children of a process that had
imported TensorFlow): Python's garbage collections traversed every object of
TensorFlow's and Keras' modules, hundreds of thousands of them, and writing their
collection headers made the child copy each page of the parent's heap it touched
(copy-on-write). PlotInference, whose Matplotlib allocates enough objects to start
several collections, took 0.73-0.82 s of figures there against 0.55 s with the
imports frozen. So the imports are frozen (`gc.freeze`: into the permanent
generation, which collections skip) as the standard library's documentation
advises before a fork, in the worker after the preload and again before each fork,
and in a process that imported TensorFlow itself right after the import
(`freeze_imports`). What is frozen lives as long as the process anyway: modules,
classes, the worker's tasks. The worker also imports the stage's own modules
(`code_entry`, the project's only: a user's module could start TensorFlow's
runtime at import) before the fork, so no child imports them again.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import time
from typing import Any

from pipeline.runtime import teardown, warm

logger = logging.getLogger("luigi-interface")

# What the worker process imports for its children: the two slow imports of every TensorFlow stage.
MODULES = ("tensorflow", "keras")

# Who imported TensorFlow for this process: {"pid": ..., "seconds": ...}; inherited by forked children.
_imported: dict[str, Any] = {}


def imported() -> dict[str, Any]:
    """The pid of the process that imported TensorFlow for this one, and the import's seconds.

    A forked child of a preloaded worker reports the worker's pid; a process that
    imported TensorFlow itself (one worker, a test) reports its own pid and seconds 0
    when the import's time is not known. Empty when TensorFlow is not imported.
    """
    if _imported:
        return dict(_imported)
    if "tensorflow" in sys.modules:
        return {"pid": os.getpid(), "seconds": 0.0}
    return {}


def preload(modules: tuple[str, ...] = ()) -> None:
    """Import TensorFlow and Keras in this process, once, without starting TensorFlow's runtime; then `modules`.

    Nothing happens when TensorFlow is imported already (by this process, or by
    the process it was forked from). `modules`: the project's own modules of the
    stage about to be forked (others are left to the stage). Ends with the
    process's objects frozen (`freeze_imports`).
    """
    if "tensorflow" not in sys.modules:
        started = time.perf_counter()
        for name in MODULES:
            __import__(name)
        _imported.update(pid=os.getpid(), seconds=round(time.perf_counter() - started, 3))
        teardown.skip_at_exit()  # this process holds TensorFlow's objects now: no teardown of them at exit
        logger.info("Imported %s once for this worker's tasks in %.1f s", " and ".join(MODULES), _imported["seconds"])
    for name in modules:
        if name.startswith("pipeline.") and name not in sys.modules:
            __import__(name)
    gc.freeze()


def freeze_imports() -> None:
    """Import Keras too, then move this process's objects (its modules') out of garbage collection.

    For a process that has just imported TensorFlow itself. Collections then skip
    those objects: shorter in this process, and in a child it forks they leave the
    pages shared. Objects made later are collected as before (a training's cycles
    among them: teardown.collect_in_background).
    """
    for name in MODULES:
        __import__(name)
    gc.freeze()


def runtime_started() -> bool:
    """Whether this process has started TensorFlow's runtime (its eager context), after which forking is unsafe."""
    if "tensorflow" not in sys.modules:
        return False
    from tensorflow.python.eager import context

    current = context.context_safe()
    return current is not None and getattr(current, "_context_handle", None) is not None


def install() -> None:
    """Make a Luigi worker with several processes preload TensorFlow before it forks a TensorFlow stage. Idempotent.

    Wraps `luigi.worker.Worker._create_task_process`, which the worker calls in
    its own process right before it starts the task's child: the one place where
    the worker knows which task it forks next.
    """
    import luigi.worker

    original = luigi.worker.Worker._create_task_process
    if getattr(original, "preloads", False):
        return

    @functools.wraps(original)
    def _create_task_process(self: luigi.worker.Worker, task: Any) -> Any:
        process = original(self, task)
        if process.use_multiprocessing and getattr(task, "uses_tensorflow", False):
            preload(tuple(getattr(task, "code_entry", ())))
            # Forked now, before any runtime: the light stages' builds go there.
            # One runner per worker process, at most one per core: more light stages at once would share them.
            runners = min(self.worker_processes, os.cpu_count() or 1)
            warm.ensure_runners(runners, getattr(task, "warm_up_runner", None))
        return process

    _create_task_process.preloads = True  # type: ignore[attr-defined]
    luigi.worker.Worker._create_task_process = _create_task_process  # type: ignore[method-assign]
