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

from typing import Any

import keras
import tensorflow as tf

AUTOSHARD = tf.data.experimental.AutoShardPolicy.DATA


def _sharded(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = AUTOSHARD
    return ds.with_options(options)


def fit(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    problem: Any,
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
            per_example = problem.per_example(y, outputs)["loss"]
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
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

    def eval_step(batch: Any) -> dict[str, tf.Tensor]:
        # Sums of the problem's per-example terms, and the count: means over the whole set.
        x, y = batch
        terms = problem.per_example(y, model(x, training=False))
        sums = {name: tf.reduce_sum(values) for name, values in terms.items()}
        return {**sums, "count": tf.cast(tf.size(terms["loss"]), tf.float32)}

    @tf.function
    def eval_sums(batch: Any) -> dict[str, tf.Tensor]:
        sums = strategy.run(eval_step, args=(batch,))
        return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for name, s in sums.items()}

    val_dist = strategy.experimental_distribute_dataset(_sharded(val_ds))

    def evaluate() -> dict[str, float]:
        totals: dict[str, float] = {}
        for batch in val_dist:
            for name, value in eval_sums(batch).items():
                totals[name] = totals.get(name, 0.0) + float(value)
        count = totals.pop("count")
        result: dict[str, float] = problem.finish({name: total / count for name, total in totals.items()})
        return result

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
        if model.stop_training:  # early stopping: every worker saw the same evaluations
            break
