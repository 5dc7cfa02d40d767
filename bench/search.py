"""A search over the DAG against Optuna in a plain Keras script, side by side. Prints figures; asserts nothing.

The same budget on each problem: 20 trials of TPE (seed 0) with the median pruner over
the learning rate (loguniform 1e-4 to 1e-1) and the hidden layers (choice of [32] and
[64, 64]), 500 steps of 64 examples, an evaluation every 100 steps, minimising the
validation MSE. Two problems: the seed's sine (1,024 examples) and a table (a CSV of
50,000 rows and 8 numeric columns, y a smooth function of them plus noise, written once
by this script: no download).

- pipeline: `python -m pipeline search EvaluateEstimator ... --trials 20 --local-scheduler`
  in a fresh artifact root: the shards are made once; each trial trains, exports and
  evaluates through the DAG, in one trial process.
- plain: one Python process running `study.optimize` whose objective loads and
  preprocesses the data in every trial (reads the CSV, splits it, computes the
  normalisation; makes the sine), builds the tf.data pipeline and the same MLP, and
  reports each evaluation to its trial for the same pruner: what a Keras + Optuna
  script usually looks like.

Both wall times include starting Python and importing TensorFlow. Printed per problem:
each wall time, their ratio (plain / pipeline: above 1 means the pipeline is faster), the
best validation MSE each found and how many trials each pruned.

    .venv/bin/python -m bench.search [--trials 20] [--problems sine table]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine

STEPS, EVERY, BATCH = 500, 100, 64
RATE, UNITS = "loguniform(1e-4, 1e-1)", "choice([32], [64, 64])"
TABLE_ROWS, TABLE_COLUMNS = 50_000, 8
PROJECT = Path(__file__).resolve().parent.parent


def write_table(path: Path) -> Path:
    """A regression table: 8 features on scales from 1 to 1000, y a smooth function of them plus noise."""
    rng = np.random.default_rng(7)
    scales = np.logspace(0, 3, TABLE_COLUMNS)
    features = rng.normal(size=(TABLE_ROWS, TABLE_COLUMNS)) * scales
    z = features / scales
    target = np.sin(z[:, 0]) + z[:, 1] * z[:, 2] / 2 + np.tanh(z[:, 3]) + 0.1 * rng.normal(size=TABLE_ROWS)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(f"x{i}" for i in range(TABLE_COLUMNS)), "y"])
        writer.writerows([*row, y] for row, y in zip(features.round(4), target.round(5), strict=True))
    return path


def pipeline_search(problem: str, folder: Path, table: Path, trials: int) -> dict[str, Any]:
    """Run `python -m pipeline search` in a fresh artifact root; its wall time, best MSE and trial states."""
    root = folder / f"pipeline-{problem}"
    root.mkdir()
    (root / "luigi.cfg").write_text(
        f"[paths]\nroot = .\n[TrainEstimator]\nmax_steps = {STEPS}\ncheckpoint_steps = {EVERY}\nbatch_size = {BATCH}\n"
    )
    source = ["--CreateShards-csv", str(table), "--CreateShards-label-column", "y"] if problem == "table" else []
    command = [
        sys.executable, "-m", "pipeline", "search", "EvaluateEstimator", *source,
        "--TrainEstimator-learning-rate", RATE, "--TrainEstimator-hidden-units", UNITS,
        "--trials", str(trials), "--sampler", "tpe", "--pruner", "median", "--local-scheduler",
    ]  # fmt: skip
    started = time.perf_counter()
    out = subprocess.run(
        command, cwd=root, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    )
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"pipeline search failed ({out.returncode}):\n{out.stderr[-3000:]}")
    best = re.search(r"^Best: trial \d+, validation.mse (\S+)", out.stdout, re.MULTILINE)
    states = [line.split()[1].split("@")[0] for line in out.stdout.split("\n\n")[0].splitlines()[1:]]
    return {"seconds": seconds, "best": float(best[1]) if best else math.nan, "states": states}


def plain_search(problem: str, table: Path, trials: int) -> dict[str, Any]:
    """Run this file's `--plain` mode in a fresh process; its wall time and what it printed."""
    command = [sys.executable, "-m", "bench.search", "--plain", problem, "--table", str(table), "--trials", str(trials)]
    started = time.perf_counter()
    out = subprocess.run(
        command, cwd=PROJECT, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    )
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"plain search failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "seconds": seconds}


# --- the plain script: Optuna and Keras, the data loaded in every trial ---------------------------


def load(problem: str, table: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation arrays, made from scratch: the sine as the pipeline defines it, or the CSV read."""
    rng = np.random.default_rng(1234)
    if problem == "sine":
        x = np.linspace(-4 * np.pi, 4 * np.pi, 1024)
        y = np.sin(x) + 1 + rng.normal(0, 0.1, x.shape)
        x, y = x[:, None].astype("float32"), y[:, None].astype("float32")
    else:
        with open(table) as f:
            rows = list(csv.reader(f))[1:]
        data = np.asarray(rows, dtype="float32")
        x, y = data[:, :-1], data[:, -1:]
    order = rng.permutation(len(x))
    cut = round(len(x) * (1 - 1 / 3))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def plain(problem: str, table: Path, trials: int) -> dict[str, Any]:
    import keras
    import optuna
    import tensorflow as tf

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class Report(keras.callbacks.Callback):
        def __init__(self, trial: optuna.trial.Trial) -> None:
            super().__init__()
            self.trial = trial

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.trial.report(float((logs or {})["val_mse"]), (epoch + 1) * EVERY)
            if self.trial.should_prune():
                raise optuna.TrialPruned()

    def objective(trial: optuna.trial.Trial) -> float:
        rate = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        units = json.loads(trial.suggest_categorical("hidden_units", ["[32]", "[64, 64]"]))
        x_train, y_train, x_val, y_val = load(problem, table)  # every trial: read, split, normalise
        normalise = keras.layers.Normalization()
        normalise.adapt(x_train)
        keras.utils.set_random_seed(42)
        inputs = keras.Input(shape=(x_train.shape[1],))
        hidden = normalise(inputs)
        for width in units:
            hidden = keras.layers.Dense(width, activation="relu")(hidden)
        model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        model.compile(
            optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(rate, STEPS)),
            loss="mse",
            metrics=["mse"],
        )
        train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(1024, seed=42).repeat().batch(BATCH)
        val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256)
        history = model.fit(
            train.prefetch(tf.data.AUTOTUNE), epochs=STEPS // EVERY, steps_per_epoch=EVERY, validation_data=val,
            callbacks=[Report(trial)], verbose=0,
        )  # fmt: skip
        return float(history.history["val_mse"][-1])

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, n_trials=trials)
    states = [trial.state.name.lower() for trial in study.trials]
    return {"best": study.best_value, "states": states}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--problems", nargs="+", default=["sine", "table"], choices=["sine", "table"])
    parser.add_argument("--plain", choices=["sine", "table"], help=argparse.SUPPRESS)
    parser.add_argument("--table", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        print(json.dumps(plain(args.plain, args.table, args.trials)))
        return
    print(machine())
    print(f"{args.trials} trials of TPE (seed 0) + median pruner, {STEPS} steps of {BATCH}, evaluated every {EVERY}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        table = write_table(folder / "table.csv")
        for problem in args.problems:
            ours = pipeline_search(problem, folder, table, args.trials)
            theirs = plain_search(problem, table, args.trials)
            print(f"\n{problem}:")
            for name, result in (("pipeline search", ours), ("plain Optuna + Keras", theirs)):
                pruned = sum(state == "pruned" for state in result["states"])
                reused = sum(state == "reused" for state in result["states"])
                print(
                    f"  {name:<21} {result['seconds']:7.1f} s   best validation mse {result['best']:.5g}   "
                    f"{pruned} pruned{f', {reused} reused' if reused else ''} of {len(result['states'])}"
                )
            print(f"  wall time ratio (plain / pipeline): {theirs['seconds'] / ours['seconds']:.2f}")


if __name__ == "__main__":
    main()
