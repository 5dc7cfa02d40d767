"""Training across hosts: a distributed loop for MultiWorkerMirroredStrategy.

Keras 3's `fit` does not run under MultiWorkerMirroredStrategy
(keras-team/keras#20585: it fails reducing the first batch and the
per-replica logs). This loop does what `fit` does for the estimator, with
TensorFlow's documented custom-loop recipe: each worker reads every shard and
keeps its share of each global batch, every replica computes its loss scaled
by the global batch size, the optimizer all-reduces the gradients, and the
evaluation sums errors over the whole validation set across workers. It
drives the same callback as `fit`, so checkpoints, events, history and
progress are the same.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

AUTOSHARD = tf.data.experimental.AutoShardPolicy.DATA


def _sharded(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = AUTOSHARD
    return ds.with_options(options)


def _per_example_loss(task: str, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    if task == "classification":
        return keras.losses.sparse_categorical_crossentropy(labels, outputs)
    return tf.reduce_mean(tf.square(tf.cast(labels, tf.float32) - outputs), axis=-1)


def fit(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    task: str,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    batch_size: int,
    start_step: int,
    max_steps: int,
    checkpoint_steps: int,
    callback: keras.callbacks.Callback,
) -> None:
    """Train from `start_step` to `max_steps`, evaluating and calling back every `checkpoint_steps`."""
    optimizer = model.optimizer
    train_iterator = iter(strategy.experimental_distribute_dataset(_sharded(train_ds)))

    def train_step(batch: Any) -> tf.Tensor:
        x, y = batch
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.nn.compute_average_loss(_per_example_loss(task, y, outputs), global_batch_size=batch_size)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_steps(steps: tf.Tensor) -> tf.Tensor:
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            losses = strategy.run(train_step, args=(next(train_iterator),))
            total += strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
        return total / tf.cast(steps, tf.float32)

    def eval_step(batch: Any) -> tuple[tf.Tensor, ...]:
        x, y = batch
        outputs = model(x, training=False)
        loss = _per_example_loss(task, y, outputs)
        if task == "classification":
            hits = tf.cast(tf.equal(tf.argmax(outputs, axis=-1), tf.cast(y, tf.int64)), tf.float32)
            return tf.reduce_sum(loss), tf.reduce_sum(hits), tf.cast(tf.size(loss), tf.float32)
        error = tf.cast(y, tf.float32) - outputs
        return tf.reduce_sum(loss), tf.reduce_sum(tf.abs(error)), tf.cast(tf.size(loss), tf.float32)

    @tf.function
    def eval_sums(batch: Any) -> list[tf.Tensor]:
        sums = strategy.run(eval_step, args=(batch,))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    val_dist = strategy.experimental_distribute_dataset(_sharded(val_ds))

    def evaluate() -> dict[str, float]:
        totals = [0.0, 0.0, 0.0]
        for batch in val_dist:
            totals = [t + float(s) for t, s in zip(totals, eval_sums(batch), strict=True)]
        loss_sum, second, count = totals
        if task == "classification":
            return {"loss": loss_sum / count, "accuracy": second / count}
        mse = loss_sum / count
        return {"loss": mse, "mse": mse, "rmse": math.sqrt(mse), "mae": second / count}

    callback.set_model(model)
    step = start_step
    epoch = start_step // checkpoint_steps
    while step < max_steps:
        steps = min(checkpoint_steps - step % checkpoint_steps, max_steps - step)
        loss = float(train_steps(tf.constant(steps)))
        step = int(optimizer.iterations.numpy())
        callback.on_train_batch_end(steps - 1, {"loss": loss})  # raises on a NaN loss
        logs = {"loss": loss, **{f"val_{k}": v for k, v in evaluate().items()}}
        callback.on_epoch_end(epoch, logs)
        epoch += 1
