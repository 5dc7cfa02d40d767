"""The Estimator's TRAIN on Keras 3: a model_dir with checkpoints, events, history and an export.

Training runs where `cluster.strategy()` says: the CPU or one GPU, every GPU
of the host (MirroredStrategy), or several hosts (MultiWorkerMirroredStrategy
from TF_CONFIG). A model_dir holds `checkpoints/` (tf.train.CheckpointManager over the model
and its optimizer, whose `iterations` is the global step), `events/train` and
`events/eval` for TensorBoard, `history.json` (the curves, saved with every
checkpoint), and at the end `model.keras` and a SavedModel in `saved_model/`.
Training is step-based: one Keras "epoch" is `checkpoint_steps` steps and
ends in an evaluation on the whole validation set and a checkpoint; a run
that was killed restarts from the latest checkpoint's step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from pipeline import builders, layout, problems
from pipeline.core import values
from pipeline.errors import PipelineError, TrainingDivergedError, UserCodeError
from pipeline.runtime import phases
from pipeline.runtime.clock import duration
from pipeline.schema import named_inputs, read_manifest
from pipeline.training import cluster, compiling, export, hparams, inputs, multiworker, preprocessing
from pipeline.training.config import as_dict

Progress = Callable[[float, str], None]
PROGRESS_SECONDS = 2.0  # between evaluations, the step and ETA are reported at most this often
# `config` below is the resolved training configuration, TrainSettings (tasks.py, config.py):
# one attribute per TrainEstimator parameter, as resolved for these shards, plus `problem` and
# `network_args` (the keyword arguments of the network builder).


def configure_determinism(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow; make TF ops deterministic (same weights every run)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def precision_policy(mixed: bool) -> str:
    """Keras dtype policy: float16 compute on GPUs, bfloat16 on CPUs (which have no fast float16)."""
    if not mixed:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


class _ModelDirCallback(keras.callbacks.Callback):
    """Checkpoint, TensorBoard events, history and progress at every evaluation."""

    def __init__(
        self,
        model_dir: Path,
        manager: tf.train.CheckpointManager,
        history: list[dict[str, Any]],
        max_steps: int,
        progress: Progress | None,
        best: tf.train.CheckpointManager | None = None,
        patience: int = 0,
        start_step: int = 0,
    ) -> None:
        super().__init__()
        self.model_dir = model_dir
        self.manager = manager
        self.best, self.patience = best, patience
        self.history = history
        self.max_steps = max_steps
        self.progress = progress
        events = model_dir / layout.EVENTS
        self.writers = {
            "train": tf.summary.create_file_writer(str(events / "train")),
            "eval": tf.summary.create_file_writer(str(events / "eval")),
        }
        self.started = time.monotonic()
        # Speed over the last interval (its evaluation included): what the rest will take per step.
        self.last_step, self.last_time = start_step, self.started
        self.reported = self.started  # the last progress report: one every PROGRESS_SECONDS between evaluations
        if progress:
            resumed = ", resumed from its checkpoint" if start_step else ""
            progress(min(start_step / max_steps, 1.0), f"step {start_step}/{max_steps}: training{resumed}")

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        phases.begin("train")

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        step = self._step()
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"Training diverged: the loss is {loss} at step {step}. Lower the learning rate "
                "(--TrainEstimator-learning-rate); the last good checkpoint is kept."
            )
        if step >= self.max_steps:
            self.model.stop_training = True
        elif self.progress and time.monotonic() - self.reported >= PROGRESS_SECONDS:
            # Between evaluations too: the step the console, the web UI and an interruption name.
            now = self.reported = time.monotonic()
            rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
            eta = duration(round((self.max_steps - step) / rate)) if rate > 0 else "?"
            self.progress(
                step / self.max_steps, f"step {step}/{self.max_steps}: loss {loss:.4g}, {rate:.1f} steps/s, ETA {eta}"
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        phases.end("train")
        logs = logs or {}
        step = self._step()
        train = {k: float(v) for k, v in logs.items() if not k.startswith("val_")}
        evaluation = {k[4:]: float(v) for k, v in logs.items() if k.startswith("val_")}
        for split, scalars in (("train", train), ("eval", evaluation)):
            with self.writers[split].as_default(step=step):
                for name, value in scalars.items():
                    tf.summary.scalar(name, value)
            self.writers[split].flush()
        self.history.append({"step": step, "train": train, "eval": evaluation})
        with phases.phase("checkpoint"):
            _write_json(self.model_dir / layout.HISTORY, self.history)
            self.manager.save(checkpoint_number=step)
            if self.best is not None and best_step(self.history) == step:
                self.best.save(checkpoint_number=step)
        if self.patience and stops_early(self.history, self.patience):
            self.model.stop_training = True  # the Estimator's stop_if_no_decrease_hook
        if self.progress:
            now = time.monotonic()
            rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
            self.last_step, self.last_time, self.reported = step, now, now
            eta = duration(round((self.max_steps - step) / rate)) if rate > 0 else "?"
            self.progress(
                min(step / self.max_steps, 1.0),
                f"step {step}/{self.max_steps}: loss {train.get('loss', float('nan')):.4g}, "
                f"eval loss {evaluation.get('loss', float('nan')):.4g}, {rate:.1f} steps/s, ETA {eta}",
            )


def best_step(history: list[dict[str, Any]]) -> int | None:
    """The step of the evaluation with the lowest eval loss (the first of equals), or None."""
    evaluated = [h for h in history if "loss" in h["eval"]]
    return min(evaluated, key=lambda h: h["eval"]["loss"])["step"] if evaluated else None


def stops_early(history: list[dict[str, Any]], patience: int) -> bool:
    """Whether the last `patience` evaluations brought no lower eval loss than the best before them."""
    step = best_step(history)
    return step is not None and sum(h["step"] > step for h in history) >= patience


def train(
    config: Any,
    shards_dir: Path,
    model_dir: Path,
    progress: Progress | None = None,
    strategy: tf.distribute.Strategy | None = None,
    trial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train into `model_dir`, resuming from its latest checkpoint, then export.

    `trial`: the search's trial this training reports each evaluation to, which may
    stop it (pipeline/training/pruning.py; on one host only), or None.

    Every worker of a cluster calls this with the same arguments; the chief
    writes `model_dir`, the others a scratch folder that is removed at the
    end. Returns the last evaluation (metrics on the whole validation set),
    the step training resumed from and how it was distributed.
    """
    strategy = strategy or cluster.strategy()  # first: it sets up the runtime for several hosts
    role = cluster.role()
    write_dir = role.write_dir(model_dir)
    manifest = read_manifest(shards_dir)
    write_dir.mkdir(parents=True, exist_ok=True)
    if role.chief:  # TensorBoard's HParams tab compares model_dirs, from the start of their training
        hparams.write_hparams(config, write_dir)
    configure_determinism(config.seed)
    policy = precision_policy(config.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    try:
        with inputs.corrupt_shards_named(shards_dir):
            result = _train(
                config, manifest, shards_dir, model_dir, write_dir, strategy, progress, role.num_workers > 1, trial
            )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if not role.chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    return {
        **result,
        "replicas": strategy.num_replicas_in_sync,
        "workers": role.num_workers,
        "strategy": type(strategy).__name__,
        "precision": policy,
    }


def build_network(config: Any, manifest: dict[str, Any]) -> keras.Model:
    """The uncompiled network: the builder `config.network` names, called with the problem's
    input shape and outputs and `config.network_args`; behind the preprocessing of named inputs
    (a table's columns: training/preprocessing.py), so that the model takes the raw columns."""
    problem = problems.get(manifest["problem"])
    builder = builders.load(config.network)
    input_shape = inputs.input_shape(manifest)
    raw = named_inputs(manifest) and builders.takes_input_spec(builders.find(config.network))
    spec: dict[str, Any] = (
        {"input_spec": {name: manifest["features"][name] for name in manifest["inputs"]}} if raw else {}
    )
    if named_inputs(manifest) and not raw and preprocessing.image_inputs(manifest):
        found = builders.find(config.network)  # an image and numbers: a cnn takes both (preprocessing.py)
        width = preprocessing.feature_width(manifest)
        takes = found.parameters is not None and "num_features" in found.parameters
        if width and takes and "num_features" not in config.network_args:
            spec = {"num_features": width}
    model = builder(
        input_shape=input_shape,
        num_outputs=problem.num_outputs(manifest.get("class_names", [])),
        problem=problem.name,
        **spec,  # a network that takes the named inputs as they are (a source of the user's)
        **values.normalise(config.network_args),  # Luigi's frozen values as plain lists and dicts
    )
    if named_inputs(manifest) and not raw:  # a table's raw columns: imputed, scaled and looked up inside the model
        inner = model
        model = preprocessing.with_preprocessing(inner, manifest)
        if inner.compiled:  # the builder's own choices, kept for the model that wraps it
            model.compile(**inner._compile_config.config)
    return model


def build_model(config: Any, manifest: dict[str, Any], replicas: int = 1) -> keras.Model:
    """`build_network` compiled as `train` compiles it (compiling.compile_model): the problem's optimizer,
    loss and metrics, or the ones chosen, or those of a network that compiled itself."""
    model = build_network(config, manifest)
    spe = math.gcd(config.steps_per_execution, config.checkpoint_steps, config.max_steps)
    if replicas > 1:
        spe = 1  # Keras 3.15's multi-step loop fails on a distributed iterator; one step per call works
    compiled: keras.Model = compiling.compile_model(model, config, spe)
    return compiled


def _train(
    config: Any,
    manifest: dict[str, Any],
    shards_dir: Path,
    model_dir: Path,
    write_dir: Path,
    strategy: tf.distribute.Strategy,
    progress: Progress | None,
    multi_worker: bool,
    trial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    with strategy.scope():
        model = build_model(config, manifest, strategy.num_replicas_in_sync)
        model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    # Every worker restores the chief's latest checkpoint and saves (a collective
    # operation) into its own folder; only the chief's is kept.
    # A save cut short (a crash, a full disk) leaves TensorFlow's temporary folder, or the
    # temporary file of its state file's atomic write, beside the checkpoints; the state
    # file still names the last complete one.
    for folder in (layout.CHECKPOINTS, layout.BEST_CHECKPOINT):
        for leftover in (write_dir / folder).glob("*_temp"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in (write_dir / folder).glob("checkpoint.tmp*"):
            leftover.unlink(missing_ok=True)
    latest = tf.train.latest_checkpoint(str(model_dir / layout.CHECKPOINTS))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    manager = tf.train.CheckpointManager(
        checkpoint, str(write_dir / layout.CHECKPOINTS), max_to_keep=config.keep_checkpoints
    )
    # With early stopping, the weights of the best evaluation are kept apart and exported.
    weights = tf.train.Checkpoint(model=model)
    best = tf.train.CheckpointManager(weights, str(write_dir / layout.BEST_CHECKPOINT), max_to_keep=1)
    start_step = int(model.optimizer.iterations.numpy())
    history = [h for h in _read_json(model_dir / layout.HISTORY, []) if h["step"] <= start_step]
    _write_json(write_dir / layout.TRAIN_CONFIG, {"config": values.normalise(as_dict(config)), "manifest": manifest})

    stopped = bool(config.patience) and stops_early(history, config.patience)  # a resumed run that had stopped
    if start_step < config.max_steps and not stopped:
        train_ds = inputs.train_dataset(
            shards_dir,
            manifest,
            config.batch_size,
            config.seed,
            config.shuffle_buffer,
            augment=config.augment,
            skip_batches=start_step,
        )
        val_ds = inputs.eval_dataset(shards_dir, manifest, "validation", config.batch_size)
        callback = _ModelDirCallback(
            write_dir, manager, history, config.max_steps, progress, best if config.patience else None,
            config.patience, start_step,
        )  # fmt: skip
        users = compiling.callbacks(config, write_dir)
        if multi_worker:  # Keras 3's fit does not run under MultiWorkerMirroredStrategy
            multiworker.fit(
                model, strategy, problems.get(manifest["problem"]), train_ds, val_ds, config.batch_size, start_step,
                config.max_steps, config.checkpoint_steps, callback,
            )  # fmt: skip
        else:
            # The pipeline's own first: an interval is checkpointed before the others run.
            callbacks = [callback]
            if trial is not None:  # after the checkpoint of the step: a pruned training resumes from it
                from pipeline.training import pruning

                callbacks.append(pruning.reporter(trial))
            with users_code_named(config, model):
                model.fit(
                    train_ds,
                    initial_epoch=start_step // config.checkpoint_steps,
                    epochs=math.ceil(config.max_steps / config.checkpoint_steps),
                    steps_per_epoch=config.checkpoint_steps,
                    validation_data=val_ds,
                    callbacks=[*callbacks, *users],
                    shuffle=False,  # the dataset is shuffled already
                    verbose=0,
                )
    result: dict[str, Any] = {"resumed_from_step": start_step, "last_eval": history[-1]["eval"] if history else {}}
    if config.patience and best.latest_checkpoint:
        weights.restore(best.latest_checkpoint).expect_partial()  # the model as it was at its best evaluation
        step = best_step(history)
        result.update(
            best_step=step,
            best_eval=next(h["eval"] for h in history if h["step"] == step),
            stopped_early_at=history[-1]["step"] if history[-1]["step"] < config.max_steps else None,
        )
    with phases.phase("export"):
        export.export(model, manifest, write_dir)
    return result


@contextlib.contextmanager
def users_code_named(config: Any, model: keras.Model) -> Iterator[None]:
    """Turn an exception raised in the user's code (callbacks, loss, metrics, network) into one line naming it.

    The training stops there (exit code 30); its staging folder keeps the
    last checkpoint, from which the same command resumes once it is fixed.
    """
    try:
        yield
    except PipelineError:
        raise
    except Exception as error:
        named = [("callbacks", config.callbacks), ("loss", config.loss), ("network", config.network)]
        files: dict[str, tuple[str, str]] = {}
        for what, spec in [*named[:2], *[("metrics", metric) for metric in config.metrics], named[2]]:
            if isinstance(spec, str) and ":" in spec:
                with contextlib.suppress(ValueError):
                    files.setdefault(os.fspath(builders.locate(spec, "").path), (f"--TrainEstimator-{what}", spec))
        frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename in files]
        if not frames:
            raise
        flag, spec = files[frames[-1].filename]
        step = int(model.optimizer.iterations.numpy())
        raise UserCodeError(
            f"{flag} {spec} raised {type(error).__name__}: {error} (at step {step}, {frames[-1].filename}:"
            f"{frames[-1].lineno}). The staging folder keeps the last checkpoint: fix it and run the same command "
            "to resume."
        ) from None


def _read_json(path: Path, default: Any) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
