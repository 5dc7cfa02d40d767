"""A stage that ran TensorFlow frees what it leaves behind at once, off the main thread (runtime/teardown.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from pathlib import Path

import luigi
import pytest

from pipeline.runtime import teardown
from pipeline.tasks import CreateShards, TrainEstimator
from tests.conftest import Config, build


def _live_input_iterators() -> int:
    return sum(type(o).__name__ in ("OwnedIterator", "TFEpochIterator") for o in gc.get_objects())


def test_training_leaves_no_input_iterator_for_a_later_stage(
    workspace: Path, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(CreateShards())
    assert teardown.wait(timeout=120)  # CreateShards' own: gc.collect() would return at once meanwhile
    gc.collect()
    before = _live_input_iterators()
    gc.disable()  # only the stage's own teardown may free reference cycles here
    try:
        TrainEstimator().run()
        assert teardown.wait(timeout=120)
        assert _live_input_iterators() == before
        # Without it, Keras' epoch iterator and its tf.data iterator outlive the training (a reference
        # cycle), until whichever later stage runs the next full garbage collection.
        monkeypatch.setattr(teardown, "collect_in_background", lambda name: None)
        config.set("TrainEstimator", "seed", "7")
        luigi.task_register.Register.clear_instance_cache()
        TrainEstimator().run()
        assert _live_input_iterators() == before + 2
    finally:
        gc.enable()
        gc.collect()


class _Cycle:
    """Garbage in a reference cycle; its finalizer sets `freed`, after waiting on `hold` if given."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.me, self.hold, self.freed = self, hold, threading.Event()
        self.finalizing = threading.Event()

    def __del__(self) -> None:
        self.finalizing.set()
        if self.hold is not None:
            self.hold.wait(60)  # as a tf.data iterator's destructor may wait for its model thread
        self.freed.set()


def test_a_request_made_while_another_collection_stalls_is_served_after_it() -> None:
    hold = threading.Event()
    stalled = _Cycle(hold)
    stalled_freed, stalled_finalizing = stalled.freed, stalled.finalizing
    gc.disable()
    try:
        del stalled
        elsewhere = threading.Thread(target=gc.collect, daemon=True)  # found it; its finalizer waits
        elsewhere.start()
        assert stalled_finalizing.wait(30)
        later = _Cycle()  # garbage made after that collection had found its own
        freed = later.freed
        del later
        teardown.collect_in_background("test teardown")
        assert not teardown.wait(timeout=0.5)  # gc.collect() returns at once meanwhile: not served yet
        assert not freed.is_set()
        hold.set()
        assert teardown.wait(timeout=60)
        assert stalled_freed.is_set() and freed.is_set()
    finally:
        hold.set()
        gc.enable()


# A process that skips its teardown at exit: objects in reference cycles are left to the kernel (their
# finalizers do not run), but the other exit handlers still run, the output is flushed and the code kept.
EXITING = (
    "import atexit, sys\n"
    "class Cycle:\n"
    "    def __del__(self): print('collected', flush=True)\n"
    "cycle = Cycle(); cycle.me = cycle; del cycle\n"
    "atexit.register(lambda: print('exit handler ran'))\n"
    "if sys.argv[1] == 'skip': from pipeline.runtime import teardown; teardown.skip_at_exit()\n"
    "if sys.argv[1] == 'import pipeline': import pipeline\n"
    "print('unflushed', end='')\n"
    "sys.exit(7)\n"
)


# "import pipeline": every process of the pipeline skips it (its up-to-date check spent 70-130 ms there).
@pytest.mark.parametrize("mode", ["skip", "import pipeline", "default"])
def test_skip_at_exit_leaves_the_cycles_to_the_kernel_and_keeps_the_rest_of_the_exit(mode: str) -> None:
    gc_disabled = f"import gc; gc.disable()\n{EXITING}"  # no automatic collection before the exit
    out = subprocess.run([sys.executable, "-c", gc_disabled, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 7
    assert "exit handler ran" in out.stdout and "unflushed" in out.stdout
    assert ("collected" in out.stdout) == (mode == "default")
