"""The DAG, top to bottom: CreateShards -> TrainEstimator -> EvaluateEstimator -> PlotInference, and ExportModel.

Each task has typed parameters (defaults in luigi.cfg, one section per task),
`requires` and a `build` that calls one library function. Upstream tasks are
built with no arguments, so every task reads its own parameters from luigi.cfg
and the command line (`--TrainEstimator-learning-rate 0.003` works whatever
task is named). Library modules that import TensorFlow, NumPy or Matplotlib
are imported inside `build`: importing this module stays fast.

The source decides the problem (problems.py): the seed's sine (the default) is
regression, a folder of images (`--CreateShards-image-dir DIR`, one subfolder
per class) classification, a table (`--CreateShards-csv FILE`) either. The
shards' manifest records it; the network, its loss and metrics, the evaluation
report and the figures follow it. Parameters stay as Luigi parsed them: what
they resolve to (the network `auto` picks, a per-network value) is a separate,
immutable value (`resolved()`), which the identity hashes and the UI shows.
`MakeShapes` writes demo images; CreateShards requires it when pointed at its
folder, `data/raw/shapes`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import luigi

from pipeline import builders, layout, paths, problems
from pipeline.core import identity, invocation, markers
from pipeline.core.parameters import (
    AugmentParameter,
    AutoFloatParameter,
    BatchSizeParameter,
    BooleanParameter,
    CheckedParameters,
    DataPathParameter,
    PerNetworkParameter,
)
from pipeline.core.stage import Stage, dag
from pipeline.errors import ParameterError, PipelineError
from pipeline.etl import source_check, sources, tfrecords, user_source
from pipeline.runtime import gpu_slots
from pipeline.schema import Schema, read_manifest
from pipeline.training import builder_check, cluster, config

logger = logging.getLogger("luigi-interface")
MANY_EPOCHS = 100  # a training budget above this many passes over the split is worth a warning
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
    mlp, cnn = [1, *hidden_units, 1], [3, *conv_filters]
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


class MakeShapes(Stage):
    """Demo data: PNGs of geometric shapes in data/raw/shapes/<class>/, written once, never modified."""

    artifact_kind = "data"
    code_entry = ("pipeline.etl.shapes",)
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
            marker = markers.read_marker(folder)
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
        from pipeline.etl import shapes

        counts = shapes.write_shapes(
            staging, self.classes, self.images_per_class, self.image_size, self.seed, self.progress
        )
        return {"images": counts}


def _folder_prefix(name: str) -> str:
    """A user's folder, file or function name, made safe for the start of an output folder's name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "source"


# What `source` resolves to for the built-in sources (each source class's `kind`).
BUILT_IN_SOURCES = ("sine", "image_folder", "table", "tfrecords")


class CreateShards(Stage):
    """ETL: raw examples -> train and validation TFRecord shards, apart from the start.

    The source is the seed's sine; or with `image_dir` a folder of images (one
    subfolder per class), resized to `image_size` squares; or with `csv` a table
    whose `label_column` is the label and every other column a numeric
    feature. Folders and tables are split stratified by class. A source file's
    listing (path, size, mtime) is part of this stage's identity: adding,
    removing or changing one makes the shards stale.
    """

    artifact_kind = "data"
    code_entry = ("pipeline.etl.sources", "pipeline.etl.shards", "pipeline.etl.user_source", "pipeline.etl.tfrecords")
    upstream_families = ("MakeShapes",)
    headline_params = ("source",)
    build_phase = "etl"

    image_dir = DataPathParameter(
        description="A folder of images, one subfolder per class (classification); empty: not images. "
        "Held as the real path it names, however it is spelled."
    )
    csv = DataPathParameter(
        description="A CSV table with a header: label_column is the label, the other columns features "
        "(numbers, categories; missing cells imputed). Held as the real path it names, however it is spelled."
    )
    label_column = luigi.Parameter(description="csv: the column to predict; source: the label's feature name.")
    problem = luigi.ChoiceParameter(
        choices=("auto", "regression", "classification"),
        description="csv: auto (numeric labels: regression, others: classification) or the problem to pose.",
    )
    tfrecords = luigi.Parameter(
        description="A glob of TFRecord files of tf.train.Example (label_column names the label); empty: none."
    )
    tfrecords_validation = luigi.Parameter(
        description="tfrecords: a glob of the validation split's files (then tfrecords is the train split); "
        "empty: the pipeline splits the records."
    )
    source = luigi.Parameter(
        description="module:function of your own that returns examples (dicts of feature name -> value), from a "
        "module in the working directory or on PYTHONPATH; empty: not a function."
    )
    source_params = luigi.DictParameter(
        description='source: keyword arguments of the function, as a JSON object, e.g. {"path": "digits.npz"}.'
    )
    columns = luigi.DictParameter(
        description='csv: column kinds that override the inferred ones, e.g. {"zip": "categorical", "name": '
        '"ignore"} (numeric, categorical or ignore).'
    )
    image_size = luigi.IntParameter(description="Images: side in pixels every image is resized to.")
    num_examples = luigi.IntParameter(description="Sine: number of (x, y) examples.")
    noise_stddev = luigi.FloatParameter(description="Sine: standard deviation of the Gaussian noise on y.")
    validation_fraction = luigi.FloatParameter(description="Share of examples held out for validation, in (0, 1).")
    num_train_shards = luigi.IntParameter(description="Number of train TFRecord files.")
    num_validation_shards = luigi.IntParameter(description="Number of validation TFRecord files.")
    seed = luigi.IntParameter(description="Seed of the noise, of the split and of the global shuffle.")
    skip_unreadable = BooleanParameter(
        description="Images: leave out the files that cannot be read (the manifest lists them) instead of failing.",
    )
    writer_processes = luigi.IntParameter(significant=False, description="Shard writer processes.")

    @property
    def source_function(self) -> str:
        """`--CreateShards-source module:function`, or "" for a built-in source. The web UI and Luigi's
        summaries show `source` resolved (Stage.to_str_params): a built-in source's kind, which a task
        recreated from them (Repro's dynamic dependencies) reads back here as no function."""
        return "" if self.source in BUILT_IN_SOURCES else self.source

    @property
    def example_source(self) -> Any:
        """The source these parameters describe, built from them by name (it validates its own fields).

        Built anew at each use (it is a small value): what it reads, a folder's listing or a table,
        is the command's current one (pipeline.invocation, tables.read_table), not the one seen
        when the task was built."""
        given = [
            flag
            for flag, value in (("image-dir", self.image_dir), ("csv", self.csv), ("source", self.source_function))
            if value
        ]
        if len(given) > 1:
            raise ParameterError(
                f"--CreateShards-{given[0]} and --CreateShards-{given[1]} are both set: a run reads one source. "
                "Empty one."
            )
        kind: Any = (
            sources.ImageFolderSource
            if self.image_dir
            else sources.TableSource
            if self.csv
            else user_source.FunctionSource
            if self.source_function
            else tfrecords.TFRecordSource
            if self.tfrecords
            else sources.SineSource
        )
        return kind(**{field: getattr(self, field) for field in kind.__dataclass_fields__})

    def validate(self) -> None:
        most = max(8, 4 * (os.cpu_count() or 1))  # more only adds processes that wait for a core
        _require(
            1 <= self.writer_processes <= most,
            f"--CreateShards-writer-processes must be between 1 and {most}. Received: {self.writer_processes}",
        )
        _require(
            0 < self.validation_fraction < 1,
            "--CreateShards-validation-fraction must be strictly between 0 and 1. "
            f"Received: {self.validation_fraction}",
        )
        # Whatever the source: a value that can never work is refused, used now or not.
        _require(
            self.image_size >= 8, f"--CreateShards-image-size must be at least 8 pixels. Received: {self.image_size}"
        )
        try:
            if not self.is_demo() or Path(self.image_dir).exists():  # MakeShapes writes the demo first
                try:
                    self.example_source.validate()
                    if self.source_function:  # its examples, in a child process (cached)
                        source_check.raise_for_schema(source_check.check(self.example_source))
                except ValueError as error:
                    # A source function's messages name their flag, and may quote the user's code (`x=...`).
                    message = str(error) if self.source_function else _flagged(str(error), "CreateShards")
                    if "--CreateShards-" not in message:  # a message about the file or folder the user named
                        named = "image-dir" if self.image_dir else "tfrecords" if self.tfrecords else "csv"
                        message = f"--CreateShards-{named}: {message}"
                    raise ParameterError(message) from None
            num_examples = self.schema().num_examples
        except OSError as error:  # a name too long for the file system, a folder that cannot be read
            flag = "--CreateShards-image-dir" if self.image_dir else "--CreateShards-csv"
            raise ParameterError(f"{flag} cannot be read: {error.strerror}. Received: {error.filename}") from None
        for split in layout.SPLITS:
            _require(
                num_examples[split] >= 1,
                f"--CreateShards-validation-fraction {self.validation_fraction} leaves the {split} split empty "
                f"({sum(num_examples.values())} examples in all).",
            )
        for split in layout.SPLITS:
            shards = getattr(self, f"num_{split}_shards")
            _require(
                1 <= shards <= num_examples[split],
                f"--CreateShards-num-{split}-shards must be between 1 and the {num_examples[split]} {split} examples. "
                f"Received: {shards}",
            )

    def schema(self) -> Schema:
        """What the shards will hold (problem, input shape, classes, examples per split), before they exist."""
        if self.is_demo() and not Path(self.image_dir).exists():
            demo = self.stage_above(MakeShapes)
            counts = sources.split_counts(demo.images_per_class, self.validation_fraction)
            shape = (self.image_size, self.image_size, 3)
            total = {split: count * len(demo.classes) for split, count in counts.items()}
            return Schema("classification", shape, tuple(sorted(demo.classes)), total)
        manifest = self.output_dir() / layout.MANIFEST  # published: the shards of this very identity
        if (
            self.csv or self.source_function or self.tfrecords
        ) and manifest.exists():  # its schema, without inferring the table's columns again
            return Schema.from_manifest(read_manifest(manifest.parent))
        if self.source_function:
            from_function: Schema = self.example_source.schema(source_check.check(self.example_source))
            return from_function
        found: Schema = self.example_source.schema()
        return found

    def resolved(self) -> dict[str, Any]:
        """The source's own fields (another source's parameters play no part) and the sharding."""
        return {
            "source": self.example_source.kind,
            **{field: getattr(self, field) for field in self.example_source.__dataclass_fields__},
            "num_train_shards": self.num_train_shards,
            "num_validation_shards": self.num_validation_shards,
        }

    def is_demo(self) -> bool:
        """Whether `image_dir` is the folder MakeShapes writes (then it is made first)."""
        demo = paths.raw_dir(MakeShapes.folder)
        return bool(self.image_dir) and Path(self.image_dir).resolve() == demo.resolve()

    def requires(self) -> list[Stage]:
        return [self.stage_above(MakeShapes)] if self.is_demo() else []

    def source_folders(self) -> dict[str, Path]:
        if (
            self.source_function or self.tfrecords
        ):  # the files a function's parameters name (an .npz, a database), TFRecords
            data_files: dict[str, Path] = self.example_source.data_files()
            return data_files
        return {"image_dir": Path(self.image_dir)} if self.image_dir else {"csv": Path(self.csv)} if self.csv else {}

    def code_digests(self) -> dict[str, str]:
        """Our code, and a source function's module with the modules of the user's it imports."""
        user_code: dict[str, str] = source_check.code(self.example_source) if self.source_function else {}
        return {**super().code_digests(), **user_code}

    def folder_prefix(self) -> str:
        if self.image_dir:
            return _folder_prefix(Path(self.image_dir).resolve().name)
        if self.source_function:
            return _folder_prefix(self.source_function.rpartition(":")[2])
        if self.tfrecords:
            return "tfrecords"
        return _folder_prefix(Path(self.csv).stem) if self.csv else "sine"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline.etl import shards

        num_shards = {"train": self.num_train_shards, "validation": self.num_validation_shards}
        manifest = shards.create_shards(staging, self.example_source, num_shards, self.writer_processes, self.progress)
        return {
            "examples": {split: s["num_examples"] for split, s in manifest["splits"].items()},
            "skipped_unreadable": len(manifest.get("skipped_unreadable", [])),  # python -m pipeline status says so
            **(self.example_source.summary() if self.csv else {}),  # a table's columns by kind, its rows with no label
        }


def _flagged(message: str, family: str) -> str:
    """A source's message about `field=value` or a field, spelled as the flag the user sets."""
    return re.sub(r"\b([a-z_]+)=", lambda m: f"--{family}-{m.group(1).replace('_', '-')} ", message, count=1)


def _warm_up_light_stages(stage: Stage) -> None:
    """In the warm runner as it starts (runtime/warm.py): the light stages' modules imported, and their input
    read for one batch of the shards `stage` reads, if published (its parsing functions converted once)."""
    from pipeline.evaluation import evaluate, figures  # noqa: F401 (imported now, not by the first stage built)
    from pipeline.training import inputs

    shards = stage.stage_above(CreateShards)
    if shards.complete():
        folder = shards.output_dir()
        for _batch in inputs.eval_dataset(folder, read_manifest(folder), "validation", 32).take(1):
            pass


class TrainEstimator(Stage):
    """Train a Keras network on the shards into a model_dir (checkpoints, events, export).

    The network follows the problem and the inputs (`auto`: the cnn for images,
    else the mlp), or is a user's `module:function`; `learning_rate`,
    `max_steps` and `checkpoint_steps` can hold one value per network (see
    luigi.cfg). What they resolve to is `settings()`.
    """

    artifact_kind = "models"
    code_entry = ("pipeline.training.estimator",)
    upstream_families = ("CreateShards",)
    headline_params = ("network",)
    uses_tensorflow = True
    resumable = True
    # Read by no stage below, and not byte-stable across identical runs (timestamps, save order):
    # a deterministic forced retrain then reruns nothing below (the model and history.json count).
    volatile_files = tuple(f"{folder}/*" for folder in (layout.CHECKPOINTS, layout.EVENTS, layout.SAVED_MODEL))
    resources = {"gpu": 1}  # noqa: RUF012 (Luigi declares it so); pool size: [resources] in luigi.cfg

    network = luigi.Parameter(
        description="auto (the cnn for images, else the mlp), mlp, cnn, or module:function for a network of "
        "your own (a module in the working directory or on PYTHONPATH)."
    )
    network_params = luigi.DictParameter(
        description='Keyword arguments for the network builder, as a JSON object, e.g. {"width": 64}.'
    )
    hidden_units = luigi.ListParameter(description="mlp: units of each hidden layer, e.g. [100, 100].")
    conv_filters = luigi.ListParameter(description="cnn: filters of each convolution block, e.g. [16, 32, 64].")
    dense_units = luigi.IntParameter(description="cnn: units of the dense layer before the output.")
    learning_rate = PerNetworkParameter(value_type=float, description="The optimizer's (initial) learning rate.")
    lr_decay = BooleanParameter(description="Cosine-decay the rate to 0 over max_steps.")
    batch_size = BatchSizeParameter(
        description=f"Examples per training step; auto: {config.AUTO_BATCH_SIZE}, or the whole training split when "
        "it is smaller."
    )
    max_steps = PerNetworkParameter(value_type=int, description="Train until the global step reaches this.")
    max_epochs = luigi.IntParameter(
        description="Train for this many passes over the training split instead of max_steps; 0: use max_steps."
    )
    patience = BatchSizeParameter(  # auto or an integer, as the batch size
        description="Stop when this many evaluations in a row bring no lower eval loss, and export the best "
        f"checkpoint; 0: off; auto: {config.TABLE_PATIENCE} for a table (evaluated every epoch), else off."
    )
    dropout = AutoFloatParameter(
        description=f"mlp: dropout rate after each hidden layer; auto: {config.TABLE_DROPOUT} for a table, else 0."
    )
    checkpoint_steps = PerNetworkParameter(value_type=int, description="Evaluate and checkpoint every N steps.")
    shuffle_buffer = luigi.IntParameter(description="Examples in the shuffle buffer.")
    seed = luigi.IntParameter(description="Seed of the initial weights, the data order and the augmentation.")
    mixed_precision = BooleanParameter(
        description="Compute in float16 on GPUs (bfloat16 on CPUs), keep weights in float32.",
    )
    augment = AugmentParameter(
        description="Augmentations of training images: auto (by problem), or a JSON list such as "
        '["flip_horizontal", "shift"], [] for none.'
    )
    # The Estimator's model_fn beside the network (training/compiling.py): auto is the problem's choice.
    optimizer = luigi.Parameter(description="auto (adam), or a Keras optimizer: adamw, sgd, rmsprop, ...")
    optimizer_params = luigi.DictParameter(
        description='Keyword arguments of the optimizer as a JSON object, e.g. {"weight_decay": 0.004}.'
    )
    loss = luigi.Parameter(description="auto (the problem's), a Keras loss (huber, mae, ...) or module:function.")
    metrics = luigi.ListParameter(
        description='Metrics beside the problem\'s own: a JSON list of Keras names or module:function, e.g. ["mape"].'
    )
    warmup_steps = luigi.IntParameter(description="Raise the learning rate linearly from 0 over this many steps.")
    callbacks = luigi.Parameter(
        description="module:function returning a list of Keras callbacks run beside the pipeline's own; empty: none."
    )
    keep_checkpoints = luigi.IntParameter(significant=False, description="Checkpoints kept.")
    steps_per_execution = luigi.IntParameter(significant=False, description="Steps per tf.function call (speed only).")
    gpus_per_training = luigi.IntParameter(
        significant=False, description="GPUs of one training (MirroredStrategy); see [gpu_slots]."
    )
    trial = luigi.Parameter(
        default="",
        significant=False,
        description="Set by python -m pipeline search: STUDY/NUMBER, the search's trial this training reports its "
        "evaluations to, which may stop (prune) it; empty: none.",
    )

    def validate(self) -> None:
        try:
            cluster.role()
        except ValueError as error:  # a malformed TF_CONFIG
            raise ParameterError(str(error)) from None
        # Both built-in networks' sizes are checked, whichever runs: a value that can never work is refused.
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
        settings = self.settings()
        for name in (
            "batch_size", "max_steps", "checkpoint_steps", "shuffle_buffer", "keep_checkpoints", "steps_per_execution"
        ):  # fmt: skip
            value = getattr(settings, name)
            flag = "--TrainEstimator-" + name.replace("_", "-")
            _require(value >= 1, f"{flag} must be a positive integer. Received: {value}")
        for name in ("max_epochs", "patience"):
            value = getattr(settings, name)
            flag = "--TrainEstimator-" + name.replace("_", "-")
            _require(value >= 0, f"{flag} must be 0 (off) or more. Received: {value}")
        _require(
            not self.trial or re.fullmatch(r"[A-Za-z0-9_.-]+/\d+", self.trial) is not None,
            f"--TrainEstimator-trial is STUDY/NUMBER, as python -m pipeline search sets it. Received: {self.trial!r}",
        )
        _require(
            self.gpus_per_training >= 1,
            f"--TrainEstimator-gpus-per-training must be a positive integer. Received: {self.gpus_per_training}",
        )
        gpu_slots.check_count(self.gpus_per_training, gpu_slots.host_gpus())  # none on this host: any count
        _require(
            math.isfinite(settings.learning_rate) and settings.learning_rate > 0,
            f"--TrainEstimator-learning-rate must be a positive number. Received: {settings.learning_rate}",
        )
        # The built-in networks' sizes in network_args are the parameters checked above:
        # network_params may not set them (builders.arguments).
        args = settings.network_args
        schema = self.requires().schema()
        _require(
            settings.batch_size <= schema.num_examples["train"],
            f"--TrainEstimator-batch-size {settings.batch_size} is larger than the {schema.num_examples['train']} "
            "training examples: each batch would repeat examples. Use at most that many.",
        )
        if "conv_filters" in args:
            size = min(schema.input_shape[:2])
            _require(
                size >> len(args["conv_filters"]) >= 1,
                f"--TrainEstimator-conv-filters has {len(args['conv_filters'])} blocks, each halving the image: "
                f"too many for --CreateShards-image-size {size}. Use at most {size.bit_length() - 1} blocks or "
                "larger images.",
            )
        own = settings.loss != problems.get(settings.problem).default_loss or settings.metrics or settings.callbacks
        if cluster.role().num_workers > 1 and (settings.network_compiles or own):
            raise ParameterError(
                "Across hosts (TF_CONFIG) the pipeline's own loop trains with the problem's loss and metrics: a "
                "network that compiles itself, or a chosen loss, metrics or callbacks, train on one host (unset "
                "TF_CONFIG)."
            )

    def builder(self) -> builders.Builder:
        return builders.find(self.settings().network)

    def call_arguments(self, network: str | None = None) -> dict[str, Any]:
        """input_shape, num_outputs and problem: what every network builder is called with. `network`: the
        resolved network, while settings() resolves it (its builder says whether it takes named inputs)."""
        schema = self.requires().schema()
        problem = problems.get(schema.problem)
        call = {
            "input_shape": list(schema.input_shape),
            "num_outputs": problem.num_outputs(schema.class_names),
            "problem": problem.name,
        }
        if schema.inputs and builders.takes_input_spec(  # named inputs, raw
            builders.find(network) if network is not None else self.builder()
        ):
            call["input_spec"] = {name: dict(spec) for name, spec in schema.inputs.items()}
        return call

    def settings(self) -> Any:
        """The resolved training configuration (TrainSettings), once per invocation: it depends on the
        source's schema (`batch_size = auto`, `max_epochs`), which a run reads afresh (invocation.forget)."""

        def resolve() -> tuple[TrainEstimator, Any]:
            parameters = {name: getattr(self, name) for name, _ in self.get_params()}
            try:
                resolved = config.resolve(TrainSettings, parameters, self.requires().schema())
                # The user's code, run once per version of it (cached): what it compiles, that it fits.
                return self, builder_check.checked(resolved, parameters, self.call_arguments(resolved.network))
            except ValueError as error:
                raise ParameterError(str(error)) from None

        return invocation.cached(("settings", id(self)), resolve)[1]

    def resolved(self) -> dict[str, Any]:
        insignificant = {name for name, param in self.get_params() if not param.significant}
        return config.significant(self.settings(), insignificant)

    def user_code(self) -> dict[str, str]:
        """Code digests of the user's modules (network, loss, metrics, callbacks) and those they import."""
        return builder_check.user_code(self.settings())

    def code_digests(self) -> dict[str, str]:
        return {**super().code_digests(), **self.user_code()}

    def requires(self) -> CreateShards:
        return self.stage_above(CreateShards)

    warm_up_runner = _warm_up_light_stages

    def folder_prefix(self) -> str:
        network = self.settings().network
        return f"{self.requires().folder_prefix()}-{_folder_prefix(network.rpartition(':')[2])}"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline.training import process  # on a GPU slot of its own when the host has GPUs

        settings, examples = self.settings(), self.requires().schema().num_examples["train"]
        epochs = settings.max_steps * settings.batch_size / examples
        if epochs > MANY_EPOCHS and not settings.patience:
            logger.warning(
                "TrainEstimator: %d steps of %d examples are %.0f epochs of the %d training examples (over %d). "
                "If the eval loss stops falling early (training_curves.png), set --TrainEstimator-max-epochs, "
                "or --TrainEstimator-patience to stop when it does.",
                settings.max_steps, settings.batch_size, epochs, examples, MANY_EPOCHS,
            )  # fmt: skip
        shards_dir = self.requires().output_dir()
        trial = None
        if self.trial:  # the search's journal, where the training reports its evaluations (pruning.py)
            study, _, number = self.trial.rpartition("/")
            trial = {"study": study, "number": int(number), "journal": str(paths.search_journal(study))}
        return process.train(settings, shards_dir, staging, self.progress, self.gpus_per_training, trial)


TrainSettings = config.settings_class(
    [name for name, _ in TrainEstimator.get_params()], name="TrainSettings", module=__name__
)


class EvaluateEstimator(Stage):
    """The problem's evaluation report of the trained model over the whole validation (and training) set, as JSON,
    with the quality gate's verdict on it (evaluation/gate.py): blessed or not, and why."""

    artifact_kind = "reports"
    code_entry = ("pipeline.evaluation.evaluate", "pipeline.evaluation.gate")
    upstream_families = ("TrainEstimator", "CreateShards")
    uses_tensorflow = True
    runs_warm = True  # with --workers N, built in the worker's warm runner (runtime/warm.py)
    build_phase = "evaluate"

    require = luigi.DictParameter(
        description='Thresholds the model must meet to be blessed, e.g. {"validation.accuracy": 0.95}: at least the '
        'bound, at most for loss-like metrics (mse, mae, ...loss, ...error); {"at_most": x} says it; {}: none.'
    )
    baseline = luigi.Parameter(
        description="A run to be no worse than (its model folder, name or identity prefix, as `python -m pipeline "
        "runs` lists), or best: the best so far on the same data, resolved when evaluating; empty: none."
    )
    max_regression = luigi.FloatParameter(
        description="baseline: how much worse than it the model may be on each compared metric (absolute)."
    )

    def validate(self) -> None:
        from pipeline.evaluation import gate  # pure Python: no TensorFlow

        gate.parse_requirements(self.require)  # its ValueError names the flag
        _require(
            math.isfinite(self.max_regression) and self.max_regression >= 0,
            f"--EvaluateEstimator-max-regression must be 0 or more. Received: {self.max_regression}",
        )
        try:
            self.resolved()  # a named baseline run must exist now
        except ValueError as error:  # ParameterError too: the run it names is not there
            message = str(error)
            flag = "--EvaluateEstimator-baseline"
            raise ParameterError(message if flag in message else f"{flag}: {message}") from None

    def resolved(self) -> dict[str, Any]:
        """require as given; a baseline run as its model folder's name, however it was named (best stays best:
        what it resolves to changes with other runs, and is recorded in the verdict, not in the identity)."""

        def resolve() -> tuple[EvaluateEstimator, dict[str, Any]]:
            if not self.baseline:
                return self, {"require": self.require, "baseline": ""}
            from pipeline.experiments import baselines  # the runs' index: only when a baseline is asked for

            run = self.baseline if self.baseline == baselines.BEST else baselines.named_run(paths.root(), self.baseline)
            return self, {"require": self.require, "baseline": run, "max_regression": self.max_regression}

        return invocation.cached(("evaluate-resolved", id(self)), resolve)[1]

    def requires(self) -> dict[str, Stage]:
        return {"model": self.stage_above(TrainEstimator), "shards": self.stage_above(CreateShards)}

    warm_up_runner = _warm_up_light_stages

    def folder_prefix(self) -> str:
        return f"{self.requires()['model'].folder_prefix()}-eval"

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline.evaluation import evaluate, gate, scoring
        from pipeline.experiments import baselines  # reads other runs' markers: no TensorFlow

        self.progress(0.0, "evaluating on the validation and training sets")
        upstream = self.requires()
        report = evaluate.evaluate(upstream["model"].output_dir(), upstream["shards"].output_dir())
        resolved = self.resolved()
        baseline = None
        if resolved["baseline"]:
            ids = {name: stage.identity().digest for name, stage in upstream.items()}
            baseline = baselines.find(
                paths.root(), resolved["baseline"], report, self.require, ids["shards"], ids["model"]
            )
        report[gate.VERDICT] = gate.verdict(report, self.require, baseline, self.max_regression)
        (staging / layout.METRICS).write_text(json.dumps(report, indent=1, sort_keys=True))
        headline = scoring.of(report["problem"]).headline(report["validation"])
        headline.update({name: report["validation"][name] for name in report.get("chosen_metrics", [])})
        verdict = report[gate.VERDICT]
        self.progress(
            1.0,
            "validation "
            + ", ".join(f"{name} {value:.4g}" for name, value in headline.items())
            + f"; {verdict['status']}",
        )
        # Strings only beside the metrics: `runs` takes the floats of a stage's info for metrics.
        return {"validation": headline, "verdict": {"status": verdict["status"], "summary": verdict["summary"]}}


class PlotInference(Stage):
    """The problem's figures: predictions on the training and validation sets, training curves, as PNGs."""

    artifact_kind = "reports"
    code_entry = ("pipeline.evaluation.figures",)
    upstream_families = ("EvaluateEstimator", "TrainEstimator", "CreateShards")
    uses_tensorflow = True
    runs_warm = True  # with --workers N, built in the worker's warm runner (runtime/warm.py)
    build_phase = "plot"

    def requires(self) -> dict[str, Stage]:
        return {
            "metrics": self.stage_above(EvaluateEstimator),
            "model": self.stage_above(TrainEstimator),
            "shards": self.stage_above(CreateShards),
        }

    def folder_prefix(self) -> str:
        return f"{self.requires()['model'].folder_prefix()}-plots"

    warm_up_runner = _warm_up_light_stages

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline.evaluation import figures

        upstream = self.requires()
        model = self.stage_above(TrainEstimator)  # upstream["model"], typed
        written = figures.write_figures(
            staging,
            model_dir=model.output_dir(),
            shards_dir=upstream["shards"].output_dir(),
            metrics_dir=upstream["metrics"].output_dir(),
            title=f"{model.output_dir().name}\n{config.describe(model.settings())}",
            progress=self.progress,
        )
        return {"figures": written}


class ExportModel(Stage):
    """A blessed model's SavedModel into TF Serving's layout, `exports/<name>/<version>/` (serving/export_model.py).

    Refuses a model the gate did not bless (EvaluateEstimator's verdict), naming the failed checks, unless
    forced; a forced export says so in its marker and in `runs`. Reruns when the model or the verdict changes;
    the same model exported again reuses its version.
    """

    artifact_kind = "reports"
    code_entry = ("pipeline.serving.export_model",)
    upstream_families = ("EvaluateEstimator", "TrainEstimator")

    model_name = luigi.Parameter(
        description="The model's name under exports/ (TF Serving's model name); empty: the run's, e.g. sine-mlp."
    )
    force = BooleanParameter(
        default=False,
        significant=False,
        description="Export even a model the quality gate did not bless (recorded: marker, runs); and rerun "
        "although up to date.",
    )

    def validate(self) -> None:
        _require(
            re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.served_name()) is not None,
            "--ExportModel-model-name must be letters, digits, '_', '.' or '-', not starting with '.' or '-'. "
            f"Received: {self.model_name!r}",
        )

    def served_name(self) -> str:
        return self.model_name or self.stage_above(TrainEstimator).folder_prefix()

    def resolved(self) -> dict[str, Any]:
        return {"model_name": self.served_name()}

    def requires(self) -> dict[str, Stage]:
        return {"metrics": self.stage_above(EvaluateEstimator), "model": self.stage_above(TrainEstimator)}

    def folder_prefix(self) -> str:
        return f"{self.stage_above(TrainEstimator).folder_prefix()}-export"

    def stale_reasons(self) -> list[str]:
        """Its own folder's reasons, and whether the exported version still holds the files it copied."""
        from pipeline.serving import export_model

        reasons = super().stale_reasons()
        if reasons:
            return reasons
        try:
            record = json.loads((self.output_dir() / export_model.RECORD).read_text())
            return export_model.check(Path(record["path"]), record["files"])
        except (OSError, ValueError, KeyError, TypeError):
            return [f"{export_model.RECORD} cannot be read"]

    def build(self, staging: Path) -> dict[str, Any]:
        from pipeline.evaluation import gate
        from pipeline.runtime import locks
        from pipeline.serving import export_model

        upstream = self.requires()
        model_dir = upstream["model"].output_dir()
        verdict = json.loads((upstream["metrics"].output_dir() / layout.METRICS).read_text()).get(gate.VERDICT)
        if not isinstance(verdict, dict):  # an evaluation made before the gate existed
            raise ParameterError(f"{upstream['metrics'].output_dir()} holds no verdict: rerun EvaluateEstimator.")
        forced = not verdict["blessed"]
        if forced and not self.force:
            raise PipelineError(
                f"ExportModel refused {model_dir.name}, which the quality gate did not bless: "
                f"{'; '.join(verdict['failed'])}. Train a better model, change --EvaluateEstimator-require, or "
                "export it anyway with --ExportModel-force (recorded as forced)."
            )
        base = paths.export_base(self.served_name())
        self.progress(0.0, f"exporting {model_dir.name} to {base}")
        with locks.exclusive(paths.lock_path(base)):  # one version number per export, across runs
            exported = export_model.export(model_dir / layout.SAVED_MODEL, base)
        facts = {
            "name": self.served_name(),
            "version": exported.version,
            "path": str(exported.path),
            "reused": exported.reused,
            "forced": forced,
            "verdict": verdict["status"],
        }
        record = {**facts, "model": str(model_dir), "summary": verdict["summary"], "files": exported.files}
        (staging / export_model.RECORD).write_text(json.dumps(record, indent=1, sort_keys=True))
        said = "the same model's version" if exported.reused else "a new version"
        self.progress(1.0, f"{exported.path}: {said}{', forced past the gate' if forced else ''}")
        return {"export": facts}


STAGES: dict[str, type[Stage]] = {
    cls.__name__: cls
    for cls in (MakeShapes, CreateShards, TrainEstimator, EvaluateEstimator, PlotInference, ExportModel)
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
