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
import threading

_threads: list[threading.Thread] = []


def collect_in_background(name: str) -> threading.Thread:
    """Collect the process's cyclic garbage now, on a daemon thread named `name`; returns the thread."""
    thread = threading.Thread(target=gc.collect, name=name, daemon=True)
    thread.start()
    _threads[:] = [t for t in _threads if t.is_alive()] + [thread]
    return thread


def wait(timeout: float | None = None) -> bool:
    """Wait for the background collections started so far; True if all have finished."""
    for thread in list(_threads):
        thread.join(timeout)
    return not any(thread.is_alive() for thread in _threads)


def skip_at_exit() -> None:
    """At this process's exit, skip the collection of its objects (gc.freeze, the first exit handler to run)."""
    atexit.unregister(gc.freeze)  # once, and the latest: exit handlers run last-in first-out
    atexit.register(gc.freeze)
