"""The DAG, top to bottom: CreateShards -> TrainEstimator -> EvaluateEstimator -> PlotInference.

Each task has typed parameters (defaults in luigi.cfg, one section per task),
`requires` and a `build` that calls one library function. Upstream tasks are
built with no arguments, so every task reads its own parameters from luigi.cfg
and the command line (`--TrainEstimator-learning-rate 0.003` works whatever
task is named). Library modules that import TensorFlow, NumPy or Matplotlib
are imported inside `build`: importing this module stays fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import luigi

from pipeline import paths
from pipeline.errors import ParameterError
from pipeline.stage import Stage, dag

NETWORK_NAMES = ("mlp",)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ParameterError(message)


class CreateShards(Stage):
    """ETL: raw examples -> train and validation TFRecord shards, apart from the start."""

    artifact_kind = "data"
    code_modules = ("sources", "shards")

    num_examples = luigi.IntParameter(description="Number of (x, y) examples of the sine source.")
    noise_stddev = luigi.FloatParameter(description="Standard deviation of the Gaussian noise on y.")
    validation_fraction = luigi.FloatParameter(description="Share of examples held out for validation, in (0, 1).")
    num_train_shards = luigi.IntParameter(description="Number of train TFRecord files.")
    num_validation_shards = luigi.IntParameter(description="Number of validation TFRecord files.")
    seed = luigi.IntParameter(description="Seed of the noise and of the global shuffle.")
    writer_processes = luigi.IntParameter(default=2, significant=False, description="Shard writer processes.")

    def validate(self) -> None:
        _require(
            self.num_examples >= 2, f"--CreateShards-num-examples must be at least 2. Received: {self.num_examples}"
        )
        _require(
            0 < self.validation_fraction < 1,
            "--CreateShards-validation-fraction must be strictly between 0 and 1. "
            f"Received: {self.validation_fraction}",
        )
        _require(self.noise_stddev >= 0, f"--CreateShards-noise-stddev must be >= 0. Received: {self.noise_stddev}")
        num_validation = int(self.num_examples * self.validation_fraction)
        for split, count, shards in (
            ("validation", num_validation, self.num_validation_shards),
            ("train", self.num_examples - num_validation, self.num_train_shards),
        ):
            _require(
                1 <= shards <= count,
                f"--CreateShards-num-{split}-shards must be between 1 and the {count} {split} examples. "
                f"Received: {shards}",
            )
        _require(self.writer_processes >= 1, "--CreateShards-writer-processes must be at least 1.")

    def folder_prefix(self) -> str:
        return "sine"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline import shards, sources

        source = sources.SineSource(self.num_examples, self.noise_stddev, self.validation_fraction, self.seed)
        num_shards = {"train": self.num_train_shards, "validation": self.num_validation_shards}
        manifest = shards.create_shards(staging, source, num_shards, self.writer_processes, self.progress)
        return {"examples": {split: s["num_examples"] for split, s in manifest["splits"].items()}}


class TrainEstimator(Stage):
    """Train a Keras network on the shards into a model_dir (checkpoints, events, export)."""

    artifact_kind = "models"
    code_modules = ("inputs", "networks", "estimator")
    uses_tensorflow = True
    resumable = True
    resources = {"gpu": 1}  # noqa: RUF012 (Luigi declares it so); pool size: [resources] in luigi.cfg

    network = luigi.ChoiceParameter(choices=NETWORK_NAMES, description="Network builder, by name.")
    hidden_units = luigi.ListParameter(description="Units of each hidden layer, e.g. [100, 100].")
    learning_rate = luigi.FloatParameter(description="Adam's (initial) learning rate.")
    lr_decay = luigi.BoolParameter(
        parsing=luigi.BoolParameter.EXPLICIT_PARSING, description="Cosine-decay the rate to 0 over max_steps."
    )
    batch_size = luigi.IntParameter(description="Examples per training step.")
    max_steps = luigi.IntParameter(description="Train until the global step reaches this.")
    checkpoint_steps = luigi.IntParameter(description="Evaluate and checkpoint every N steps.")
    shuffle_buffer = luigi.IntParameter(description="Examples in the shuffle buffer.")
    seed = luigi.IntParameter(description="Seed of the initial weights and of the data order.")
    keep_checkpoints = luigi.IntParameter(default=3, significant=False, description="Checkpoints kept.")
    steps_per_execution = luigi.IntParameter(
        default=50, significant=False, description="Steps per tf.function call (speed only)."
    )

    def validate(self) -> None:
        for name in ("batch_size", "max_steps", "checkpoint_steps", "shuffle_buffer", "keep_checkpoints"):
            value = getattr(self, name)
            flag = "--TrainEstimator-" + name.replace("_", "-")
            _require(value >= 1, f"{flag} must be a positive integer. Received: {value}")
        _require(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            f"--TrainEstimator-learning-rate must be a positive number. Received: {self.learning_rate}",
        )
        _require(
            len(self.hidden_units) > 0 and all(isinstance(u, int) and u > 0 for u in self.hidden_units),
            f"--TrainEstimator-hidden-units must be a list of positive integers. Received: {list(self.hidden_units)}",
        )

    def requires(self) -> CreateShards:
        return CreateShards()

    def folder_prefix(self) -> str:
        return f"{self.requires().folder_prefix()}-{self.network}"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline import estimator

        config = estimator.TrainConfig(
            network=self.network,
            hidden_units=tuple(self.hidden_units),
            learning_rate=self.learning_rate,
            lr_decay=self.lr_decay,
            batch_size=self.batch_size,
            max_steps=self.max_steps,
            checkpoint_steps=self.checkpoint_steps,
            keep_checkpoints=self.keep_checkpoints,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            steps_per_execution=self.steps_per_execution,
        )
        return estimator.train(config, self.requires().output_dir(), staging, self.progress)


class EvaluateEstimator(Stage):
    """Metrics of the trained model over the whole validation (and training) set, as JSON."""

    artifact_kind = "reports"
    code_modules = ("inputs", "networks", "estimator")
    uses_tensorflow = True

    def requires(self) -> dict[str, Stage]:
        return {"model": TrainEstimator(), "shards": CreateShards()}

    def folder_prefix(self) -> str:
        return f"{self.requires()['model'].folder_prefix()}-eval"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline import estimator

        self.progress(0.0, "evaluating on the validation and training sets")
        up = self.requires()
        metrics = estimator.evaluate(up["model"].output_dir(), up["shards"].output_dir())
        (staging / paths.METRICS).write_text(json.dumps(metrics, indent=1, sort_keys=True))
        self.progress(1.0, f"validation MSE {metrics['validation']['mse']:.4g}")
        return {"validation": metrics["validation"]}


class PlotInference(Stage):
    """Predictions on the training and validation sets, and the training curves, as PNGs."""

    artifact_kind = "reports"
    code_modules = ("inputs", "estimator", "plots")
    uses_tensorflow = True

    def requires(self) -> dict[str, Stage]:
        return {"metrics": EvaluateEstimator(), "model": TrainEstimator(), "shards": CreateShards()}

    def folder_prefix(self) -> str:
        return f"{self.requires()['model'].folder_prefix()}-plots"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline import estimator, plots

        up = self.requires()
        model_dir, shards_dir = up["model"].output_dir(), up["shards"].output_dir()
        run = model_dir.name
        predictions = {}
        for i, split in enumerate(("train", "validation")):
            self.progress(i / 3, f"predicting on the {split} set")
            predictions[split] = estimator.predict(model_dir, shards_dir, split)
        self.progress(2 / 3, "plotting")
        plots.write_predictions(staging / paths.PREDICTIONS_PNG, run, predictions)
        history = json.loads((model_dir / paths.HISTORY).read_text())
        plots.write_curves(staging / paths.CURVES_PNG, run, history)
        return {"figures": [paths.PREDICTIONS_PNG, paths.CURVES_PNG]}


STAGES: dict[str, type[Stage]] = {
    cls.__name__: cls for cls in (CreateShards, TrainEstimator, EvaluateEstimator, PlotInference)
}


class Repro(luigi.Task):
    """Bring every stage of a DAG up to date, upstream first (as `dvc repro`).

    `luigi --module pipeline PlotInference` follows Luigi: a complete
    PlotInference is not rerun because a shard went missing since, and its
    upstream is then not even checked. Repro checks each stage of the DAG in
    turn, after the stages above it have run, so a damaged shard is rebuilt
    and the stages below rerun only if the rebuilt bytes differ.
    """

    target = luigi.ChoiceParameter(
        choices=tuple(STAGES),
        default="PlotInference",
        description="The last stage of the DAG to bring up to date.",
    )

    def stages(self) -> list[Stage]:
        return dag(STAGES[self.target]())

    def complete(self) -> bool:
        return all(stage.complete() for stage in self.stages())

    def run(self) -> Any:
        # Dynamic dependencies: Luigi checks each yielded stage when it is
        # yielded, so a stage is judged after its upstream has been rebuilt.
        # (Not `yield from`: Luigi send()s the outputs back into the generator.)
        for stage in self.stages():  # noqa: UP028
            yield stage
