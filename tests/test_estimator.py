"""Training into a model_dir: checkpoints, events, history, export, resume (pipeline/training/estimator.py)."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from pipeline import layout
from pipeline.core import markers
from pipeline.etl import shards, sources
from pipeline.evaluation import evaluate
from pipeline.training import estimator
from tests.conftest import VENV_BIN, make_root


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    shards.create_shards(folder, sources.SineSource(), {"train": 3, "validation": 2})
    return folder


def small_config(**overrides: Any) -> Any:
    """The sine MLP as luigi.cfg resolves it (TrainSettings), with a short run's settings."""
    from pipeline.tasks import TrainEstimator

    values: dict[str, Any] = dict(
        network="mlp", network_args={"hidden_units": (100, 100)}, learning_rate=0.01, lr_decay=True,
        batch_size=64, max_steps=200, checkpoint_steps=100, keep_checkpoints=3, shuffle_buffer=1024, seed=42,
        steps_per_execution=50,
    )  # fmt: skip
    return dataclasses.replace(TrainEstimator().settings(), **{**values, **overrides})


def _scalars(event_dir: Path, tag: str) -> dict[int, float]:
    values = {}
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def test_train_writes_a_complete_model_dir(shards_dir: Path, tmp_path: Path) -> None:
    config = small_config(max_steps=300, checkpoint_steps=100, keep_checkpoints=2)
    result = estimator.train(config, shards_dir, tmp_path)
    assert result["resumed_from_step"] == 0

    state = tf.train.get_checkpoint_state(str(tmp_path / layout.CHECKPOINTS))
    assert Path(state.model_checkpoint_path).name == "ckpt-300"
    assert [Path(p).name for p in state.all_model_checkpoint_paths] == ["ckpt-200", "ckpt-300"]

    history = json.loads((tmp_path / layout.HISTORY).read_text())
    assert [h["step"] for h in history] == [100, 200, 300]
    # Event files carry the same numbers against the global step.
    eval_loss = _scalars(tmp_path / layout.EVENTS / "eval", "loss")
    train_loss = _scalars(tmp_path / layout.EVENTS / "train", "loss")
    assert sorted(eval_loss) == sorted(train_loss) == [100, 200, 300]
    assert eval_loss[300] == pytest.approx(history[-1]["eval"]["loss"], rel=1e-6)
    assert eval_loss[300] < eval_loss[100]  # it learns

    # Both exports predict what the trained model predicts.
    keras_model = evaluate.load_model(tmp_path)
    served = tf.saved_model.load(str(tmp_path / layout.SAVED_MODEL))
    x = np.linspace(-10, 10, 7, dtype=np.float32)[:, None]
    predicted = served.signatures["raw"](x=tf.constant(x[:, 0]))["predictions"].numpy()  # signatures.py
    np.testing.assert_allclose(predicted, keras_model.predict(x, verbose=0)[:, 0], rtol=1e-5)


def test_training_is_deterministic(shards_dir: Path, tmp_path: Path) -> None:
    config = small_config(max_steps=100, checkpoint_steps=100)
    estimator.train(config, shards_dir, tmp_path / "a")
    estimator.train(config, shards_dir, tmp_path / "b")
    a, b = (evaluate.load_model(tmp_path / d).get_weights() for d in "ab")
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_resume_continues_from_the_latest_checkpoint(shards_dir: Path, tmp_path: Path) -> None:
    estimator.train(small_config(max_steps=200, checkpoint_steps=100, lr_decay=False), shards_dir, tmp_path)
    result = estimator.train(small_config(max_steps=400, checkpoint_steps=100, lr_decay=False), shards_dir, tmp_path)
    assert result["resumed_from_step"] == 200
    history = json.loads((tmp_path / layout.HISTORY).read_text())
    assert [h["step"] for h in history] == [100, 200, 300, 400]


def _staging_step(root: Path) -> int:
    for state in root.glob("models/*.partial/checkpoints/checkpoint"):
        text = state.read_text()
        if "ckpt-" in text:
            return int(text.split("ckpt-")[1].split('"')[0])
    return 0


def test_sigkill_mid_training_then_rerun_resumes_and_matches(tmp_path: Path) -> None:
    """Kill `luigi ... TrainEstimator` with SIGKILL mid-way; the rerun resumes and ends as an unbroken run."""
    args = [
        str(VENV_BIN / "luigi"),
        "--module", "pipeline", "TrainEstimator", "--local-scheduler",
        "--TrainEstimator-max-steps", "3000", "--TrainEstimator-checkpoint-steps", "250",
        "--TrainEstimator-lr-decay", "false",
    ]  # fmt: skip
    killed, unbroken = tmp_path / "killed", tmp_path / "unbroken"
    make_root(killed)
    make_root(unbroken)
    proc = subprocess.Popen(args, cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _staging_step(killed) < 500 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = _staging_step(killed)
    assert 500 <= step_at_kill < 3000, "the kill should land mid-way through training"
    assert not [p for p in (killed / "models").iterdir() if p.is_dir() and not p.name.endswith(".partial")]

    rerun = subprocess.run(args, cwd=killed, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumes from the staging folder" in rerun.stderr
    (model_dir,) = [p for p in (killed / "models").iterdir() if p.is_dir()]
    marker = markers.read_marker(model_dir)
    assert marker is not None
    assert marker["info"]["resumed_from_step"] >= step_at_kill
    history = json.loads((model_dir / layout.HISTORY).read_text())
    assert history[-1]["step"] == 3000
    assert [h["step"] for h in history] == list(range(250, 3001, 250))  # no step lost or repeated

    assert subprocess.run(args, cwd=unbroken, capture_output=True, timeout=300).returncode == 0
    (reference,) = [p for p in (unbroken / "models").iterdir() if p.is_dir()]
    assert reference.name == model_dir.name  # same identity
    for wa, wb in zip(
        evaluate.load_model(model_dir).get_weights(), evaluate.load_model(reference).get_weights(), strict=True
    ):
        np.testing.assert_array_equal(wa, wb)


def test_early_stopping_stops_after_patience_evaluations_and_exports_the_best(shards_dir: Path, tmp_path: Path) -> None:
    # A constant, large rate makes the eval loss wander: it stops once 2 evaluations bring nothing lower.
    config = small_config(
        max_steps=2000, checkpoint_steps=20, steps_per_execution=20, learning_rate=0.05, lr_decay=False, patience=2
    )
    result = estimator.train(config, shards_dir, tmp_path)
    history = json.loads((tmp_path / layout.HISTORY).read_text())
    losses = [h["eval"]["loss"] for h in history]
    best = int(np.argmin(losses))
    assert result["stopped_early_at"] == history[-1]["step"] < 2000
    assert len(history) - 1 - best == 2 and result["best_step"] == history[best]["step"]
    # The exported model is the best evaluation's weights, not the last ones.
    p = evaluate.predict(tmp_path, shards_dir, "validation")
    mse = float(np.mean((p["predictions"].ravel() - p["labels"].ravel()) ** 2))
    assert mse == pytest.approx(losses[best], rel=1e-4) and mse < losses[-1]
    # Run again on the same folder: it had stopped, so it trains no further.
    again = estimator.train(config, shards_dir, tmp_path)
    assert again["resumed_from_step"] == history[-1]["step"] and again["best_step"] == result["best_step"]
    assert json.loads((tmp_path / layout.HISTORY).read_text()) == history


def test_max_epochs_sets_the_steps_from_the_training_split(workspace: Path, config: Any) -> None:
    from luigi.task_register import Register

    from pipeline.tasks import TrainEstimator

    config.set("TrainEstimator", "max_epochs", 3)
    Register.clear_instance_cache()
    settings = TrainEstimator().settings()  # 683 training examples, batches of 64 (the test settings)
    assert settings.max_epochs == 3 and settings.max_steps == -(-3 * 683 // 64) == 33
