"""The DAG, top to bottom: CreateShards -> TrainEstimator -> EvaluateEstimator -> PlotInference.

Each task has typed parameters (defaults in luigi.cfg, one section per task),
`requires` and a `build` that calls one library function. Upstream tasks are
built with no arguments, so every task reads its own parameters from luigi.cfg
and the command line (`--TrainEstimator-learning-rate 0.003` works whatever
task is named). Library modules that import TensorFlow, NumPy or Matplotlib
are imported inside `build`: importing this module stays fast.

Two experiments share the DAG: the seed's sine regression (the default) and
image classification (`--CreateShards-image-dir DIR`, a folder with one
subfolder per class). The network, metrics and plots follow the source.
`MakeShapes` writes demo images; CreateShards requires it when pointed at its
folder, `data/raw/shapes`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import luigi
from luigi.freezing import FrozenOrderedDict

from pipeline import cluster, identity, image_folder, paths
from pipeline.errors import ParameterError
from pipeline.parameter_checks import CheckedParameters
from pipeline.stage import Stage, dag

# Network builders by name (networks.NETWORKS) and the task each solves; auto picks by source.
NETWORK_TASKS = {"mlp": "regression", "cnn": "classification"}
NETWORK_NAMES = ("auto", *NETWORK_TASKS)
SHAPE_NAMES = ("circle", "square", "triangle", "star", "cross", "hexagon")  # shapes.OUTLINES


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ParameterError(message)


def _check_memory(hidden_units: Any, conv_filters: Any, dense_units: int) -> None:
    """Refuse layer sizes whose weights, with Adam's state, would not fit in this machine's memory.

    A lower bound (4 float32 copies of each weight: the weight, its gradient, Adam's two
    moments; inputs and activations not counted): what it refuses can never train here.
    """
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mlp = [1, *hidden_units, 1]
    cnn = [3, *conv_filters]
    for flag, units, weights in (
        ("hidden-units", hidden_units, sum(a * b + b for a, b in itertools.pairwise(mlp))),
        (
            "conv-filters (with --TrainEstimator-dense-units)",
            conv_filters,
            sum(9 * a * b for a, b in itertools.pairwise(cnn)) + cnn[-1] * dense_units,
        ),
    ):
        _require(
            16 * weights <= memory,
            f"--TrainEstimator-{flag} makes a network of {weights:.3g} weights ({16 * weights / 1e9:.3g} GB with "
            f"Adam's state), more than this machine's {memory / 1e9:.3g} GB of memory. Received: {list(units)}",
        )


class PerNetworkParameter(luigi.Parameter[Any]):
    """One value for every network, or one per network as JSON: `0.01` or `{"mlp": 0.01, "cnn": 0.003}`."""

    def __init__(self, *, value_type: type, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value_type = value_type

    def parse(self, x: str) -> Any:
        with contextlib.suppress(ValueError):
            return self.value_type(x)  # one number, as Python spells it: 0.01, 1e-2, nan, 6000
        try:
            value = json.loads(x)
        except ValueError:
            raise ValueError(self._expected(x)) from None
        return self._checked(value)

    def normalize(self, x: Any) -> Any:
        return self.parse(x) if isinstance(x, str) else self._checked(x)

    def _checked(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return FrozenOrderedDict(sorted((str(k), self._number(v)) for k, v in value.items()))
        return self._number(value)

    def _number(self, v: Any) -> Any:
        integral = isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v == int(v))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.value_type is int and not integral):
            raise ValueError(self._expected(v))
        return self.value_type(v)

    def _expected(self, received: Any) -> str:
        one, many = ("an integer", "integers") if self.value_type is int else ("a number", "numbers")
        example = '{"mlp": ..., "cnn": ...}'
        return f"Expected {one}, or a JSON object of {many} by network like {example}. Received: {received!r}"

    def serialize(self, x: Any) -> str:
        return json.dumps(dict(x) if isinstance(x, Mapping) else x)


class MakeShapes(Stage):
    """Demo data: PNGs of geometric shapes in data/raw/shapes/<class>/, written once, never modified."""

    artifact_kind = "data"
    code_modules = ("shapes",)
    folder: ClassVar[str] = "shapes"  # below data/raw/

    classes = luigi.ChoiceListParameter(choices=SHAPE_NAMES, description="Shape classes, e.g. circle,square.")
    images_per_class = luigi.IntParameter(description="Images of each class.")
    image_size = luigi.IntParameter(description="Side of the square images, in pixels.")
    seed = luigi.IntParameter(description="Seed of colours, sizes, positions, rotations and noise.")

    def validate(self) -> None:
        _require(
            len(set(self.classes)) == len(self.classes) >= 2,
            f"--MakeShapes-classes must name at least two different shapes. Received: {','.join(self.classes)}",
        )
        _require(
            self.images_per_class >= 2,
            f"--MakeShapes-images-per-class must be at least 2. Received: {self.images_per_class}",
        )
        _require(
            self.image_size >= 8, f"--MakeShapes-image-size must be at least 8 pixels. Received: {self.image_size}"
        )
        # Raw data is immutable: never overwrite a folder made otherwise (or not by this task).
        folder = self.output_dir()
        if folder.exists():
            marker = identity.read_marker(folder)
            if marker is None or marker.get("identity") != self.identity().digest:
                why = "; ".join(identity.explain_change(marker, self.identity().as_dict())) if marker else ""
                raise ValueError(
                    f"{folder} already holds images that MakeShapes with these parameters did not make"
                    f"{f' ({why})' if why else ''}. Raw data is never overwritten: move or delete that "
                    "folder to make the demo images anew, or keep its parameters."
                )

    def output_dir(self) -> Path:
        return paths.raw_dir(self.folder)

    def folder_prefix(self) -> str:
        return self.folder

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline import shapes

        counts = shapes.write_shapes(
            staging, self.classes, self.images_per_class, self.image_size, self.seed, self.progress
        )
        return {"images": counts}


def _folder_prefix(folder: str) -> str:
    """A user's folder name, made safe for an output folder name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(folder).resolve().name).strip("-.")
    return name or "images"


class CreateShards(Stage):
    """ETL: raw examples -> train and validation TFRecord shards, apart from the start.

    The source is the seed's sine, or with `image_dir` a folder of images
    (one subfolder per class), resized to `image_size` squares and split
    stratified by class. The folder's listing (path, size, mtime of every
    file) is part of this stage's identity: adding, removing or changing an
    image makes the shards stale.
    """

    artifact_kind = "data"
    code_modules = ("sources", "shards", "image_folder")
    build_phase = "etl"

    image_dir = luigi.Parameter(
        description="A folder of PNG or JPEG images, one subfolder per class; empty: the sine source."
    )
    image_size = luigi.IntParameter(description="Images: side in pixels every image is resized to.")
    num_examples = luigi.IntParameter(description="Number of (x, y) examples of the sine source.")
    noise_stddev = luigi.FloatParameter(description="Standard deviation of the Gaussian noise on y.")
    validation_fraction = luigi.FloatParameter(description="Share of examples held out for validation, in (0, 1).")
    num_train_shards = luigi.IntParameter(description="Number of train TFRecord files.")
    num_validation_shards = luigi.IntParameter(description="Number of validation TFRecord files.")
    seed = luigi.IntParameter(description="Seed of the noise, of the split and of the global shuffle.")
    writer_processes = luigi.IntParameter(default=2, significant=False, description="Shard writer processes.")

    def validate(self) -> None:
        _require(
            0 < self.validation_fraction < 1,
            "--CreateShards-validation-fraction must be strictly between 0 and 1. "
            f"Received: {self.validation_fraction}",
        )
        most = max(8, 4 * (os.cpu_count() or 1))  # more only adds processes that wait for a core
        _require(
            1 <= self.writer_processes <= most,
            f"--CreateShards-writer-processes must be between 1 and {most}. Received: {self.writer_processes}",
        )
        _require(
            self.image_size >= 8, f"--CreateShards-image-size must be at least 8 pixels. Received: {self.image_size}"
        )
        self._split_sizes: dict[str, int] | None = None
        if self.image_dir:
            try:
                self._validate_images()
            except OSError as error:  # a name too long for the file system, a folder not readable
                raise ParameterError(
                    f"--CreateShards-image-dir cannot be read: {error.strerror}. Received: {self.image_dir[:200]}"
                ) from None
            return
        _require(
            self.num_examples >= 2, f"--CreateShards-num-examples must be at least 2. Received: {self.num_examples}"
        )
        _require(self.noise_stddev >= 0, f"--CreateShards-noise-stddev must be >= 0. Received: {self.noise_stddev}")
        num_validation = int(self.num_examples * self.validation_fraction)
        _require(
            1 <= num_validation < self.num_examples,
            f"--CreateShards-validation-fraction {self.validation_fraction} of {self.num_examples} examples leaves "
            "a split empty; raise it (or --CreateShards-num-examples).",
        )
        self._validate_shard_counts(num_validation, self.num_examples - num_validation, "examples")

    def _validate_images(self) -> None:
        if self.is_demo() and not Path(self.image_dir).exists():
            return  # MakeShapes writes it first
        classes = image_folder.check_layout(Path(self.image_dir), self.validation_fraction)
        num_validation = sum(image_folder.num_validation(len(f), self.validation_fraction) for f in classes.values())
        num_train = sum(len(f) for f in classes.values()) - num_validation
        self._validate_shard_counts(num_validation, num_train, "images")

    def _validate_shard_counts(self, num_validation: int, num_train: int, what: str) -> None:
        self._split_sizes = {"train": num_train, "validation": num_validation}
        for split, count, shards in (
            ("validation", num_validation, self.num_validation_shards),
            ("train", num_train, self.num_train_shards),
        ):
            _require(
                1 <= shards <= count,
                f"--CreateShards-num-{split}-shards must be between 1 and the {count} {split} {what}. "
                f"Received: {shards}",
            )

    def split_sizes(self) -> dict[str, int] | None:
        """Examples in each split, as validation counted them (None: the demo images are not made yet)."""
        return self._split_sizes

    def task_kind(self) -> str:
        """The task the source asks for: classification (images) or regression (the sine)."""
        return "classification" if self.image_dir else "regression"

    def is_demo(self) -> bool:
        """Whether `image_dir` is the folder MakeShapes writes (then it is made first)."""
        demo = paths.raw_dir(MakeShapes.folder)
        return bool(self.image_dir) and Path(self.image_dir).resolve() == demo.resolve()

    def requires(self) -> list[Stage]:
        return [MakeShapes()] if self.is_demo() else []

    def source_folders(self) -> dict[str, Path]:
        return {"image_dir": Path(self.image_dir)} if self.image_dir else {}

    def folder_prefix(self) -> str:
        return _folder_prefix(self.image_dir) if self.image_dir else "sine"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline import shards, sources

        source: sources.SineSource | sources.ImageFolderSource
        if self.image_dir:
            source = sources.ImageFolderSource(
                Path(self.image_dir), self.image_size, self.validation_fraction, self.seed
            )
        else:
            source = sources.SineSource(self.num_examples, self.noise_stddev, self.validation_fraction, self.seed)
        num_shards = {"train": self.num_train_shards, "validation": self.num_validation_shards}
        manifest = shards.create_shards(staging, source, num_shards, self.writer_processes, self.progress)
        return {"examples": {split: s["num_examples"] for split, s in manifest["splits"].items()}}


class TrainEstimator(Stage):
    """Train a Keras network on the shards into a model_dir (checkpoints, events, export).

    The network follows the source (`auto`: mlp for the sine, cnn for
    images), and so can `learning_rate`, `max_steps` and `checkpoint_steps`
    (one value, or one per network: see luigi.cfg).
    """

    artifact_kind = "models"
    code_modules = ("inputs", "networks", "estimator")
    uses_tensorflow = True
    resumable = True
    resources = {"gpu": 1}  # noqa: RUF012 (Luigi declares it so); pool size: [resources] in luigi.cfg

    network = luigi.ChoiceParameter(
        choices=NETWORK_NAMES, description="Network builder by name; auto: mlp for the sine, cnn for images."
    )
    hidden_units = luigi.ListParameter(description="mlp: units of each hidden layer, e.g. [100, 100].")
    conv_filters = luigi.ListParameter(description="cnn: filters of each convolution block, e.g. [16, 32, 64].")
    dense_units = luigi.IntParameter(description="cnn: units of the dense layer before the classifier.")
    learning_rate = PerNetworkParameter(value_type=float, description="Adam's (initial) learning rate.")
    lr_decay = luigi.BoolParameter(
        parsing=luigi.BoolParameter.EXPLICIT_PARSING, description="Cosine-decay the rate to 0 over max_steps."
    )
    batch_size = luigi.IntParameter(description="Examples per training step.")
    max_steps = PerNetworkParameter(value_type=int, description="Train until the global step reaches this.")
    checkpoint_steps = PerNetworkParameter(value_type=int, description="Evaluate and checkpoint every N steps.")
    shuffle_buffer = luigi.IntParameter(description="Examples in the shuffle buffer.")
    seed = luigi.IntParameter(description="Seed of the initial weights, the data order and the augmentation.")
    mixed_precision = luigi.BoolParameter(
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="Compute in float16 on GPUs (bfloat16 on CPUs), keep weights in float32.",
    )
    keep_checkpoints = luigi.IntParameter(default=3, significant=False, description="Checkpoints kept.")
    steps_per_execution = luigi.IntParameter(
        default=50, significant=False, description="Steps per tf.function call (speed only)."
    )

    def validate(self) -> None:
        try:
            cluster.role()
        except ValueError as error:  # a malformed TF_CONFIG
            raise ParameterError(str(error)) from None
        # Both networks' sizes are checked, whichever runs: a value that can never work is refused.
        for name in ("hidden_units", "conv_filters"):
            units = getattr(self, name)
            _require(
                isinstance(units, (list, tuple))
                and len(units) > 0
                and all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units),
                f"--TrainEstimator-{name.replace('_', '-')} must be a list of positive integers. Received: {units}",
            )
        _require(
            self.dense_units >= 1, f"--TrainEstimator-dense-units must be at least 1. Received: {self.dense_units}"
        )
        _check_memory(self.hidden_units, self.conv_filters, self.dense_units)
        self._resolve_for_source()
        for name in (
            "batch_size", "max_steps", "checkpoint_steps", "shuffle_buffer", "keep_checkpoints", "steps_per_execution"
        ):  # fmt: skip
            value = getattr(self, name)
            flag = "--TrainEstimator-" + name.replace("_", "-")
            _require(value >= 1, f"{flag} must be a positive integer. Received: {value}")
        _require(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            f"--TrainEstimator-learning-rate must be a positive number. Received: {self.learning_rate}",
        )
        sizes = self.requires().split_sizes()
        _require(
            sizes is None or self.batch_size <= sizes["train"],
            f"--TrainEstimator-batch-size {self.batch_size} is larger than the {sizes and sizes['train']} training "
            "examples: each batch would repeat examples. Use at most that many.",
        )
        if self.network == "cnn":
            image_size = self.requires().image_size
            _require(
                image_size >> len(self.conv_filters) >= 1,
                f"--TrainEstimator-conv-filters has {len(self.conv_filters)} blocks, each halving the image: "
                f"too many for --CreateShards-image-size {image_size}. Use at most "
                f"{image_size.bit_length() - 1} blocks or larger images.",
            )

    def _resolve_for_source(self) -> None:
        """Set the values this run uses, so that the stage identity holds exactly those.

        `auto` becomes the source's network, a per-network value this
        network's, and the other network's sizes are cleared: changing them
        changes nothing here. (Reads CreateShards' parameters: they are fixed
        for a Luigi run, so the cached task instance stays right.)
        """
        kind = self.requires().task_kind()
        if self.network == "auto":
            self.network = next(name for name, task in NETWORK_TASKS.items() if task == kind)
        _require(
            NETWORK_TASKS[self.network] == kind,
            f"--TrainEstimator-network {self.network} solves {NETWORK_TASKS[self.network]}, but the source asks "
            f"for {kind} (--CreateShards-image-dir {'set' if kind == 'classification' else 'empty'}). Use auto.",
        )
        for name in ("learning_rate", "max_steps", "checkpoint_steps"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                _require(
                    self.network in value,
                    f"--TrainEstimator-{name.replace('_', '-')} has no value for the {self.network} network. "
                    f"Received: {json.dumps(dict(value))}",
                )
                setattr(self, name, value[self.network])
        if self.network == "mlp":
            self.conv_filters, self.dense_units = (), 0
        else:
            self.hidden_units = ()

    def requires(self) -> CreateShards:
        return CreateShards()

    def folder_prefix(self) -> str:
        return f"{self.requires().folder_prefix()}-{self.network}"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline import estimator

        return estimator.train(self.train_config(), self.requires().output_dir(), staging, self.progress)

    def train_config(self) -> Any:
        """The library's TrainConfig for this task's parameters."""
        from pipeline import estimator

        return estimator.TrainConfig(
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
            conv_filters=tuple(self.conv_filters),
            dense_units=self.dense_units,
            mixed_precision=self.mixed_precision,
        )


class EvaluateEstimator(Stage):
    """Metrics of the trained model over the whole validation (and training) set, as JSON."""

    artifact_kind = "reports"
    code_modules = ("inputs", "networks", "estimator", "metrics")
    uses_tensorflow = True
    build_phase = "evaluate"

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
        validation = metrics["validation"]
        if "accuracy" in validation:  # classification: the headline numbers, not the whole report
            self.progress(1.0, f"validation accuracy {validation['accuracy']:.4f}")
            return {"validation": {k: validation[k] for k in ("accuracy", "macro_avg", "num_examples")}}
        self.progress(1.0, f"validation MSE {validation['mse']:.4g}")
        return {"validation": validation}


class PlotInference(Stage):
    """Predictions on the training and validation sets, and the training curves, as PNGs."""

    artifact_kind = "reports"
    code_modules = ("inputs", "estimator", "plots")
    uses_tensorflow = True
    build_phase = "plot"

    def requires(self) -> dict[str, Stage]:
        return {"metrics": EvaluateEstimator(), "model": TrainEstimator(), "shards": CreateShards()}

    def folder_prefix(self) -> str:
        return f"{self.requires()['model'].folder_prefix()}-plots"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline import estimator, plots

        up = self.requires()
        model_dir, shards_dir = up["model"].output_dir(), up["shards"].output_dir()
        run = model_dir.name
        if CreateShards().task_kind() == "classification":
            return self._plot_classification(staging, run, model_dir, shards_dir, up["metrics"].output_dir())
        predictions = {}
        for i, split in enumerate(("train", "validation")):
            self.progress(i / 3, f"predicting on the {split} set")
            predictions[split] = estimator.predict(model_dir, shards_dir, split)
        self.progress(2 / 3, "plotting")
        plots.write_predictions(staging / paths.PREDICTIONS_PNG, run, predictions)
        history = json.loads((model_dir / paths.HISTORY).read_text())
        plots.write_curves(staging / paths.CURVES_PNG, run, history)
        return {"figures": [paths.PREDICTIONS_PNG, paths.CURVES_PNG]}

    def _plot_classification(
        self, staging: Path, run: str, model_dir: Path, shards_dir: Path, metrics_dir: Path
    ) -> dict[str, Any]:
        """Confusion matrix, a grid of validation images (true and predicted class), training curves."""
        from pipeline import estimator, inputs, plots
        from pipeline.shards import read_manifest

        manifest = read_manifest(shards_dir)
        metrics = json.loads((metrics_dir / paths.METRICS).read_text())
        self.progress(0.0, "plotting the confusion matrix")
        plots.write_confusion(staging / paths.CONFUSION_PNG, run, metrics["validation"], metrics["class_names"])
        self.progress(1 / 3, "predicting on the validation set")
        p = estimator.predict(model_dir, shards_dir, "validation", keep_inputs=False)
        predicted = p["predictions"].argmax(axis=-1)
        indices = plots.grid_indices(p["labels"], predicted)
        images = inputs.take_images(shards_dir, manifest, "validation", indices)
        plots.write_image_grid(
            staging / paths.IMAGES_PNG,
            run,
            [images[i] for i in indices],
            p["labels"][indices],
            p["predictions"][indices],
            metrics["class_names"],
            summary=f": {int((predicted != p['labels']).sum())} of {len(predicted)} misclassified, shown first",
        )
        self.progress(2 / 3, "plotting the training curves")
        history = json.loads((model_dir / paths.HISTORY).read_text())
        plots.write_curves(staging / paths.CURVES_PNG, run, history)
        return {"figures": [paths.CONFUSION_PNG, paths.IMAGES_PNG, paths.CURVES_PNG]}


STAGES: dict[str, type[Stage]] = {
    cls.__name__: cls for cls in (MakeShapes, CreateShards, TrainEstimator, EvaluateEstimator, PlotInference)
}


class Repro(CheckedParameters, luigi.Task):
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
