"""Input stall: is training ever left waiting for data? Prints figures; asserts nothing.

For the sine MLP and for the image CNN (on the demo shapes), with luigi.cfg's
configuration for each (batch size, steps_per_execution, network sizes),
trains the same model on the real input (`inputs.train_dataset`: TFRecord
shards read, shuffled, parsed, augmented) and on one batch of it cached and
repeated (`take(1).cache().repeat()`: the input costs nothing). The real
input is what training gets (both splits are small enough to be kept in
memory: `inputs.IN_MEMORY_BYTES`), and, for comparison, the streamed input a
larger split gets (the same shards read, shuffled, parsed every epoch). Each
measurement is one epoch of `--steps` steps after a warm-up epoch (tracing,
the first shuffle buffer), the inputs taking turns in each of `--repeat`
rounds. Stall = 1 - real steps/s / synthetic steps/s within each round
(target: under 5 %); the median round's stall is printed with the range.

Where the floor is (issue 23): the real input's own work, timed alone (the
same batches pulled through tf.data with no model, wall and CPU seconds of the
process), against the step's CPU seconds (the synthetic epochs'). On a host
without a GPU both run on the same cores: a step that keeps both cores busy
(the CNN's) cannot hide the input's work, and the stall is then at least the
input's share of the CPU seconds, input / (input + step), whatever the
threading; a step that leaves a core idle (the sine MLP's) can. On a GPU
host the step runs on the GPU and the input on the otherwise idle CPU,
prefetched while the step runs: it stalls only a step shorter than the
input's wall time per batch, which is printed as that limit.

    .venv/bin/python -m bench.input_stall [--repeat 7] [--mlp-steps 6000] [--cnn-steps 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common


class EpochTimer:
    """A Keras callback recording each epoch's wall time (built lazily: Keras is imported late)."""

    @staticmethod
    def make() -> Any:
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []

                self.cpu_seconds: list[float] = []

            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                self.started, self.cpu_started = time.perf_counter(), time.process_time()

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                self.seconds.append(time.perf_counter() - self.started)
                self.cpu_seconds.append(time.process_time() - self.cpu_started)

        return _Timer()


def measure(name: str, root: Path, image_dir: Path | None, steps: int, repeat: int) -> dict[str, Any]:
    """Steps/s of the real and the synthetic input for one configuration."""
    from pipeline.training import estimator, inputs

    with common.workspace(root, image_dir=image_dir):
        folder, manifest = common.shards()
        config = common.train_task().settings()
    estimator.configure_determinism(config.seed)  # as estimator.train: deterministic ops
    args = (folder, manifest, config.batch_size, config.seed, config.shuffle_buffer)
    real = inputs.train_dataset(*args, augment=config.augment)
    limit, inputs.IN_MEMORY_BYTES = inputs.IN_MEMORY_BYTES, 0  # decided when the dataset is built
    try:
        streamed = inputs.train_dataset(*args, augment=config.augment)
    finally:
        inputs.IN_MEMORY_BYTES = limit
    # Real and synthetic run one after the other in each round: their ratio is taken per round.
    datasets = {"real": real, "synthetic": real.take(1).cache().repeat(), "streamed": streamed}
    models = {mode: estimator.build_model(config, manifest) for mode in datasets}
    rates: dict[str, list[float]] = {mode: [] for mode in datasets}
    step_cpu: list[float] = []  # CPU seconds of one step, the input costing nothing
    for _ in range(repeat):
        for mode, ds in datasets.items():
            timer = EpochTimer.make()
            models[mode].fit(ds, epochs=2, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0)
            rates[mode].append(steps / timer.seconds[-1])  # the first epoch is the warm-up
            if mode == "synthetic":
                step_cpu.append(timer.cpu_seconds[-1] / steps)
    return {
        "name": name,
        "batch_size": config.batch_size,
        "steps_per_execution": models["real"].steps_per_execution,
        "steps": steps,
        "in_memory": inputs.parsed_bytes(manifest, "train") <= inputs.IN_MEMORY_BYTES,
        "step_cpu": step_cpu,
        **input_alone(real, steps, repeat),
        **rates,
    }


def input_alone(dataset: Any, steps: int, repeat: int) -> dict[str, list[float]]:
    """Wall and CPU seconds per batch of `dataset` with no model: `steps` batches pulled inside TensorFlow."""
    import tensorflow as tf

    @tf.function
    def pull(batches: Any) -> Any:
        return batches.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1)

    pull(dataset.take(steps))  # warm-up: tracing, the first shuffle
    wall, cpu = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        pull(dataset.take(steps))
        wall.append((time.perf_counter() - started) / steps)
        cpu.append((time.process_time() - cpu_started) / steps)
    return {"input_wall": wall, "input_cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--mlp-steps", type=int, default=6000, help="steps per timed epoch, sine MLP")
    parser.add_argument("--cnn-steps", type=int, default=100, help="steps per timed epoch, image CNN")
    args = parser.parse_args()
    print(f"Machine: {common.machine()}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results.append(measure("sine mlp", root, None, args.mlp_steps, args.repeat))
        results.append(measure("shapes cnn", root, root / common.DEMO_SHAPES, args.cnn_steps, args.repeat))
    print(f"Input stall, steps/s median (min-max) of {args.repeat} epochs after a warm-up epoch:")
    for r in results:
        print(
            f"  {r['name']}: batch {r['batch_size']}, steps_per_execution {r['steps_per_execution']}, "
            f"{r['steps']} steps an epoch; synthetic {common.spread(r['synthetic'], 1)} steps/s"
        )
        for mode, label in (("real", "in memory" if r["in_memory"] else "streamed"), ("streamed", "streamed")):
            if mode == "streamed" and not r["in_memory"]:
                continue  # the real input streams already
            real = common.median(r[mode])
            # Each round's ratio: the machine's speed drifts between rounds (a VM's neighbours), less within one.
            stalls = [1 - a / b for a, b in zip(r[mode], r["synthetic"], strict=True)]
            target = " (target < 5 %)" if mode == "real" else " (a split too large to keep in memory)"
            print(
                f"    {mode} input ({label}): {common.spread(r[mode], 1)} steps/s, {real * r['batch_size']:.0f} "
                f"examples/s; stall {common.median(stalls):.1%} ({min(stalls):.1%} to {max(stalls):.1%}), "
                f"the median of each round's 1 - {mode}/synthetic{target}"
            )
        step, work, wall = (common.median(r[key]) for key in ("step_cpu", "input_cpu", "input_wall"))
        print(
            f"    the floor: the input alone takes {work * 1e3:.2f} ms of CPU per batch ({wall * 1e3:.2f} ms wall), "
            f"a step {step * 1e3:.2f} ms of CPU: the input's share is {work / (work + step):.1%}, the least "
            "stall when the step keeps these cores busy; on a GPU host the input stalls only steps "
            f"shorter than {wall * 1e3:.2f} ms ({1 / wall:.0f} batches/s, the input's own limit)"
        )
    print(f"Load average at the end: {common.load()}")


if __name__ == "__main__":
    main()
