"""Warm processes for the light TensorFlow stages of a run with `--workers N` (issue 23).

With `--workers N`, Luigi forks a child per task from its worker process, and a
forked child starts TensorFlow's runtime afresh: its context and thread pools,
the first call of every kernel, the tracing of the input's and the model's
functions. For a training that is nothing; for an evaluation of the sine it is
most of its work (a forked EvaluateEstimator took 0.38 s, against 0.15 s in
the process that had just trained, and that cannot be moved before the fork:
once the runtime has started, a fork is unsafe).

So the worker also forks runners, before TensorFlow's runtime starts anywhere
(one per worker process, at most one per core: runtime/preload.py): processes
that build the light stages (`Stage.runs_warm`: EvaluateEstimator,
PlotInference) one after another and keep their runtime warm between them.
Each stage's own child still does everything around the build (the output
lock, the checks, the staging folder, the marker and the publish) and sends a
free runner only the build: the task's family and parameters and the staging
folder. The runner sends back the stage's progress as it goes (the child shows
it at the console and in the scheduler's UI), then the build's result or its
exception, with the runner's traceback as its cause.

One stage at a time per runner: a child that finds every runner busy, dead or
absent builds in its own process, as before. Nothing outlives what it serves: a
runner ignores Ctrl-C (the child gets it, kills the runner and pauses as
before), exits when the child it builds for dies (a SIGKILL, a timeout) or when
the worker does, and the worker starts a new one at its next fork. Trainings
never go there: they are long, and on a GPU host each needs a slot of its own
(runtime/gpu_slots.py). Standard library only at import (the scheduling path):
TensorFlow, Keras, Luigi's registry and the stage's modules are imported in a
runner.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.runtime import teardown

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

POLL_SECONDS = 0.05  # how often the runner checks that the child it builds for, and the worker, still live


class RemoteTracebackError(Exception):
    """The runner's traceback of an exception a build raised there: the cause of the one the child raises."""

    def __str__(self) -> str:
        return str(self.args[0])


class Runner:
    """The worker's handle on its runner, inherited by every child the worker forks after it."""

    def __init__(self, warm_up: Callable[[], None] | None = None) -> None:
        context = multiprocessing.get_context("fork")
        self.owner = os.getpid()
        self.lock = context.Lock()  # held by the one child whose build the runner is doing
        self.connection, runner_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(runner_end, self.connection, warm_up), name="warm-runner")
        self.process.daemon = True  # ended by multiprocessing as the worker exits
        self.process.start()
        runner_end.close()
        assert self.process.pid is not None  # started
        self.pid: int = self.process.pid


_runners: list[Runner] = []  # the worker's, inherited by its children


def ensure_runners(count: int, warm_up: Callable[[], None] | None = None) -> None:
    """In the worker, before it forks a TensorFlow stage: `count` live runners (new ones for those that ended).

    `count`: the worker's processes, so that a light stage never finds them all
    busy. `warm_up`: run in a new runner as it starts, after its own warm-up (the
    stage's `warm_up_runner`: the light stages' modules and input, which this
    layer does not import).
    """
    # Not yet reaped, a runner whose threads are still being torn down is dead already: its main thread is a zombie.
    _runners[:] = [r for r in _runners if r.owner == os.getpid() and r.process.is_alive() and _alive(r.pid)]
    while len(_runners) < count:
        _runners.append(Runner(warm_up))


def build(stage: Any, staging: Path) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """`stage.build(staging)`, in a warm runner when this is a child of a worker that has one free.

    Returns the build's info, the CPU seconds it took in the runner (0 here),
    and what to record about where it ran (empty when here).
    """
    runner = None
    if getattr(stage, "runs_warm", False):
        for candidate in _runners:
            if candidate.owner != os.getpid() and _alive(candidate.pid) and candidate.lock.acquire(block=False):
                runner = candidate  # free: none of the other children builds there
                break
    if runner is None:  # none, all busy or ended: built here, as without runners
        return stage.build(staging), 0.0, {}
    message = None
    try:
        runner.connection.send((stage.task_family, stage.to_str_params(), os.fspath(staging), os.getpid()))
        while True:
            message = runner.connection.recv()
            if message[0] == "progress":
                stage.progress(message[1], message[2])
                continue
            break
    except (EOFError, ConnectionError):  # the runner ended before it answered: built here instead, below
        message = None
    except BaseException:  # Ctrl-C, SIGTERM: the runner must not go on writing into this staging folder
        with contextlib.suppress(OSError):
            os.kill(runner.pid, signal.SIGKILL)
        raise
    finally:
        runner.lock.release()
    if message is None or message[0] == "progress":
        with contextlib.suppress(OSError):
            os.kill(runner.pid, signal.SIGKILL)  # ended, or ending: nothing of it writes here any more
        logging.getLogger("luigi-interface").warning(
            "%s: its warm runner (pid %d) ended before it answered; building in this process", stage, runner.pid
        )
        return stage.build(staging), 0.0, {}
    kind, payload, cpu_seconds, builds_before = message
    where = {"pid": runner.pid, "builds_before": builds_before}
    if kind == "done":
        return payload, cpu_seconds, where
    error, remote_traceback = payload
    raise error from RemoteTracebackError(remote_traceback)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _serve(connection: Connection, worker_end: Connection, warm_up: Callable[[], None] | None) -> None:
    """The runner: build what the children send, one at a time, until the worker ends."""
    worker_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the child's: it kills this process if it must
    worker = os.getppid()
    building_for: list[int] = []  # the child whose build runs now, if any
    # Held while the watch checks that child, and while this thread changes it: a child that exits once it has
    # its reply is never taken for one that died mid-build (the reply is sent after the entry is cleared).
    guard = threading.Lock()
    watch = threading.Thread(target=_watch, args=(worker, building_for, guard), name="warm-runner-watch", daemon=True)
    watch.start()
    _warm_up()
    if warm_up is not None:
        with contextlib.suppress(Exception):  # left to the first build to meet and report
            warm_up()
    builds = 0
    while True:
        try:
            family, params, staging, client = connection.recv()
        except (EOFError, OSError):  # the worker and every child closed their ends
            os._exit(0)
        with guard:
            building_for[:] = [client]
        reply = _build(family, params, Path(staging), connection)
        with guard:
            building_for.clear()
        connection.send((*reply, builds))
        builds += 1


def _watch(worker: int, building_for: list[int], guard: threading.Lock) -> None:
    """End the runner when its worker has ended, or the child it builds for has (a build nobody waits for)."""
    while True:
        time.sleep(POLL_SECONDS)
        if os.getppid() != worker:
            os._exit(1)
        with guard:
            if any(not _alive(pid) for pid in building_for):
                os._exit(1)


def _build(family: str, params: dict[str, str], staging: Path, connection: Any) -> tuple[str, Any, float]:
    """One stage's build here: ("done", its info, CPU seconds) or ("error", (exception, traceback), CPU seconds)."""
    from luigi.task_register import Register

    started = time.process_time()
    Register.clear_instance_cache()  # the task, and those above it, made afresh from this invocation's config
    try:
        task = Register.get_task_cls(family).from_str_params(params)
        task.progress = lambda fraction, message: connection.send(("progress", fraction, message))
        info = getattr(task, "build_in_runner", task.build)(staging)  # a Stage's: the invocation's memo forgotten
        outcome: tuple[str, Any] = ("done", info)
    except BaseException as error:  # what the stage raised, whatever it is, goes to the child that raises it
        text = traceback.format_exc()
        try:
            pickle.loads(pickle.dumps(error))  # what the child will do with it
        except Exception:  # an exception that does not pickle back arrives as its type's name and message
            error = RuntimeError(f"{type(error).__name__}: {error}")
        outcome = ("error", (error, text))
    finally:
        teardown.collect_in_background("warm-runner teardown")  # this build's models, datasets, figures
    return (*outcome, time.process_time() - started)


def _warm_up() -> None:
    """What every light stage does first, done once beforehand on a throwaway model.

    TensorFlow's runtime (its context, thread pools, device), then a compiled
    Keras model saved, loaded and run over a mapped `tf.data` pipeline, its
    metrics computed: the first call of each kernel, the tracing and conversion
    machinery, Keras' saving code. Any failure here is left to the first build to
    meet and report.
    """
    with contextlib.suppress(Exception):
        import tempfile

        import keras
        import numpy as np
        import tensorflow as tf

        x = keras.Input(shape=(1,), name="x")
        model = keras.Model(x, keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(x)))
        model.compile(optimizer="adam", loss="mse", metrics=["mae"])  # saved with its optimizer, as a training's
        model.optimizer.build(model.trainable_variables)
        with tempfile.TemporaryDirectory(prefix="warm-runner-") as folder:
            model.save(Path(folder) / "model.keras")
            loaded = keras.saving.load_model(Path(folder) / "model.keras", safe_mode=True)
        data = tf.data.Dataset.from_tensor_slices(tf.zeros([8, 1])).batch(4).map(lambda batch: batch * 1.0)
        for batch in data:
            predictions = np.asarray(loaded(batch, training=False))
        loaded.reset_metrics()
        loaded.compute_metrics(None, np.zeros([4, 1], np.float32), predictions, sample_weight=None)
