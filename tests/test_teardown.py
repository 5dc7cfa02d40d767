"""A stage that ran TensorFlow frees what it leaves behind at once, off the main thread (runtime/teardown.py)."""

from __future__ import annotations

import gc
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
