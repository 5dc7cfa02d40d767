"""Tear down what a training leaves behind, right away and off the main thread (standard library only).

Why: after `model.fit`, the training's `tf.data` iterator is not freed when
training returns: Keras' model, its functions and the epoch iterator hold each
other in reference cycles, so it waits for Python's next full garbage
collection. In a `--local-scheduler` run that collection falls in a later stage
of the same process, most often PlotInference (Matplotlib allocates enough
objects to start one). Destroying an autotuned iterator joins its tf.data
"model" thread, and that thread can miss the wake-up of the cancellation (it
re-checks `IsCancelled()` before the canceller has set it, then sleeps out its
optimisation period, which doubles up to 60 s during a long training). The
stage that happens to run that collection then stalls for as long: PlotInference
took 33-45 s after training against 5 s alone (issue 14), 40 s in
bench/end_to_end.py here, and a bare `gc.collect()` after a 450-step training
took from 0.2 to 40 s (native stacks: the main thread in
`RootDataset::Iterator::~Iterator` waiting for `Model::OptimizeLoop`).

So when a stage that runs TensorFlow has built its output, the process's
garbage is collected at once (Stage calls this), on a daemon thread.
TensorFlow releases the GIL while it deletes a tensor handle, so if that wait
happens, it blocks this thread and no stage. A collection already running
makes the others in the process (automatic or explicit) return at once, so
nothing waits on it either.

That same rule would make a request a no-op: `gc.collect()` returns 0 at once
while any other thread collects, so a stage that finished while the last
stage's collection was still stalled (up to 60 s, above) would leave its
iterators to whichever stage collects next, the stall this module exists to
avoid (CI: a training's epoch iterator outlived its teardown). So one daemon
thread collects for every request: a request made while it collects runs one
more full collection after, and a collection counts only when it ran in that
thread (a gc callback tells), else it is tried again once the other ends.

At exit, a process that imported TensorFlow would spend 1-3 s more tearing
down its hundreds of thousands of Python objects: clearing the modules turns
TensorFlow's and Keras' module graphs (classes, functions, pybind objects) into
cyclic garbage, which the interpreter's last collections then traverse and
free, objects whose memory the kernel reclaims at once anyway (issue 23: 1.5 s
from the results block to the prompt). `skip_at_exit()` moves every object into
the permanent generation (`gc.freeze`) as the first exit handler, so those
collections find nothing to do. Everything else still happens as before: the
other atexit handlers (logging's flush, multiprocessing's clean-up) run, the
files are flushed and closed, and the exit code is kept.
"""

from __future__ import annotations

import atexit
import gc
import os
import threading
import time

_state = threading.Condition()
_requested = 0  # requests made so far
_collected = 0  # requests that a full collection, begun after them, has served
_collector: threading.Thread | None = None
GIVE_UP_SECONDS = 300.0  # another thread's collection that long: this request is left to the next one


def _forget_in_child() -> None:  # a forked child has none of its parent's threads, nor their requests
    global _state, _requested, _collected, _collector
    _state, _requested, _collected, _collector = threading.Condition(), 0, 0, None


os.register_at_fork(after_in_child=_forget_in_child)


def collect_in_background(name: str) -> threading.Thread:
    """Collect the process's cyclic garbage soon, on a daemon thread (named `name` if it starts now); returns it.

    A collection running already in that thread is followed by one more, which
    serves this request and every other made meanwhile.
    """
    global _requested, _collector
    with _state:
        _requested += 1
        if _collector is None:
            _collector = threading.Thread(target=_collect_while_requested, name=name, daemon=True)
            _collector.start()
        return _collector


def wait(timeout: float | None = None) -> bool:
    """Wait for a full collection begun after every request made so far; True if one has finished."""
    with _state:
        target = _requested
        return _state.wait_for(lambda: _collected >= target, timeout)


def _collect_while_requested() -> None:
    global _collected, _collector
    while True:
        with _state:
            if _collected >= _requested:
                _collector = None  # the next request starts a thread afresh
                return
            serving = _requested
        _collect_fully()
        with _state:
            _collected = serving
            _state.notify_all()


def _collect_fully() -> None:
    """Run one full collection in this thread: `gc.collect()` again, as long as it returned at once instead."""
    me = threading.get_ident()
    ran: list[bool] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2 and threading.get_ident() == me:
            ran.append(True)

    gc.callbacks.append(seen)
    deadline = time.monotonic() + GIVE_UP_SECONDS
    try:
        while not ran and time.monotonic() < deadline:
            gc.collect()
            if not ran:  # another thread's collection was running: this one did nothing
                time.sleep(0.05)
    finally:
        gc.callbacks.remove(seen)


def skip_at_exit() -> None:
    """At this process's exit, skip the collection of its objects (gc.freeze, the first exit handler to run)."""
    atexit.unregister(gc.freeze)  # once, and the latest: exit handlers run last-in first-out
    atexit.register(gc.freeze)
