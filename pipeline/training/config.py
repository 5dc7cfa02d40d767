"""The resolved training configuration: what TrainEstimator's parameters mean for these shards.

Luigi's parsed parameters stay as parsed (`network=auto`, a learning rate per
network). Resolution is a value computed from them, never written back:

- `network`: `auto` becomes the problem's default for the input (a CNN for
  images, else the MLP);
- a per-network value (`{"mlp": 0.01, "cnn": 0.003}`) becomes the one of the
  network used; a network of the user's takes the values of the built-in
  network its input would get;
- `network_args`: exactly the keyword arguments the builder receives besides
  `input_shape`, `num_outputs` and `problem`: the parameters it declares (the
  mlp's `hidden_units`) and `network_params`. Another network's sizes are not
  part of it, so changing them changes nothing here;
- `augment`: `auto` becomes the problem's default;
- `optimizer`, `loss`, `metrics`: `auto` becomes the problem's default (Adam,
  its loss; the metrics listed are added beside the problem's own), a name is
  checked against Keras' (training/compiling.py); `network_compiles` is true
  when the user's network compiles itself, whose choices then replace them.
- `patience` and `dropout`: `auto` becomes the table defaults for a table
  (early stopping evaluated every epoch, `TABLE_PATIENCE`; `TABLE_DROPOUT`),
  and off for the sine and images (their results stay as they were).

The settings class is made from the task's parameters by name
(`settings_class`): a parameter is declared once, as a Luigi parameter with
its default in luigi.cfg, and reaches the estimator and the builder without
hand-written copies. Standard library only: this runs on Luigi's scheduling path.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Collection, Mapping
from typing import Any

from pipeline import builders, problems
from pipeline.schema import Schema
from pipeline.training import compiling

AUTO_BATCH_SIZE = 128  # `--TrainEstimator-batch-size auto`: this many, or the whole training split if smaller
# A table's defaults (`auto`): small tables overfit in a few dozen epochs, so training is evaluated every
# epoch, stops after this many evaluations without a lower eval loss (exporting the best checkpoint), and
# the mlp drops out this share of its hidden units (bench/tables.py measures them against linear models).
TABLE_PATIENCE = 20
TABLE_DROPOUT = 0.5

# Parameters that do not become fields: the force flag, and what resolves into network_args.
NOT_SETTINGS = frozenset({"force", "network_params", "variant", "trial"})
DERIVED = ("problem", "network_args", "network_compiles")  # fields that are not parameters
NOT_PER_NETWORK = frozenset({"optimizer_params"})  # JSON objects that are not one value per network


@functools.cache
def network_argument_names() -> frozenset[str]:
    """Parameters that are arguments of a built-in network (they reach only the network that takes them)."""
    names: set[str] = set()
    for network in builders.BUILT_IN:
        names |= set(builders.find(network).parameters or ())
    return frozenset(names - set(builders.CALL_ARGUMENTS))


def settings_class(parameter_names: Collection[str], name: str = "TrainSettings", module: str = __name__) -> type:
    """A frozen dataclass with a field per parameter (but network arguments) and the derived fields."""
    skip = NOT_SETTINGS | network_argument_names()
    fields = [(p, Any) for p in parameter_names if p not in skip] + [(d, Any) for d in DERIVED]
    cls = dataclasses.make_dataclass(name, fields, frozen=True)
    cls.__module__ = module  # where it is assigned to `name`: instances pickle
    return cls


def per_network(value: Any, network: str, fallback: str, flag: str) -> Any:
    """One value of a per-network parameter: its own, or the fallback network's for a user's network."""
    if not isinstance(value, Mapping):
        return value
    for key in (network, fallback):
        if key in value:
            return value[key]
    raise ValueError(f"{flag} has no value for the {network} network. Received: {dict(value)}")


def resolve(cls: type, parameters: Mapping[str, Any], schema: Schema) -> Any:
    """An instance of the settings class `cls` for the task's `parameters` and the shards' `schema`.

    Raises ValueError naming the flag when a value does not fit (an unknown
    network, a network-params entry its builder does not take, an augmentation
    that does not apply to these inputs).
    """
    problem = problems.get(schema.problem)
    default_network = problem.default_network(schema.input_shape)
    network = default_network if parameters["network"] == "auto" else parameters["network"]
    builder = builders.find(network)
    if network == "cnn" and problems.input_kind(schema.input_shape) != "image":
        raise ValueError(
            f"--TrainEstimator-network cnn takes images ([height, width, channels]); these inputs are "
            f"{schema.input_shape[0]} numbers. Use mlp (or auto)."
        )
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in NOT_PER_NETWORK:
            values[field.name] = parameters[field.name]
        elif field.name in parameters:
            flag = "--TrainEstimator-" + field.name.replace("_", "-")
            values[field.name] = per_network(parameters[field.name], network, default_network, flag)
    values["network"] = network
    values["problem"] = problem.name
    if values["batch_size"] == "auto":
        values["batch_size"] = min(AUTO_BATCH_SIZE, schema.num_examples.get("train") or AUTO_BATCH_SIZE)
    if values["max_epochs"] > 0 and values["batch_size"] > 0 and schema.num_examples.get("train"):
        values["max_steps"] = math.ceil(values["max_epochs"] * schema.num_examples["train"] / values["batch_size"])
    table = schema.source == "table"
    if values["patience"] == "auto":  # a table: early stopping, evaluated every epoch; otherwise off
        values["patience"] = TABLE_PATIENCE if table else 0
        if table and values["batch_size"] > 0:
            values["checkpoint_steps"] = max(1, math.ceil(schema.num_examples.get("train", 1) / values["batch_size"]))
    values["augment"] = _augmentations(parameters["augment"], problem, schema)
    # What the training is compiled with: the problem's defaults, or Keras' names or the user's (compiling.py).
    values["optimizer"] = compiling.optimizer_name(parameters["optimizer"])
    values["optimizer_params"] = compiling.optimizer_arguments(parameters["optimizer_params"])
    values["loss"] = compiling.loss_name(parameters["loss"], problem)
    values["metrics"] = compiling.metric_names(parameters["metrics"], problem)
    values["callbacks"] = compiling.callbacks_name(parameters["callbacks"])
    values["network_compiles"] = False  # until the user's network is run (builder_check.checked)
    # A max_steps below 1 is its own mistake (TrainEstimator.validate names it): the warm-up is not judged by it.
    if values["warmup_steps"] < 0 or 1 <= values["max_steps"] <= values["warmup_steps"]:
        raise ValueError(
            f"--TrainEstimator-warmup-steps must be 0 or more and less than the {values['max_steps']} training steps. "
            f"Received: {values['warmup_steps']}"
        )
    network_parameters = {
        name: value for name, value in parameters.items() if name not in NOT_SETTINGS and name != "network"
    }
    if network_parameters.get("dropout") == "auto":
        network_parameters["dropout"] = TABLE_DROPOUT if table else 0.0
    if "dropout" in network_parameters and not 0 <= network_parameters["dropout"] < 1:
        raise ValueError(
            f"--TrainEstimator-dropout must be auto or in [0, 1). Received: {network_parameters['dropout']}"
        )
    values["network_args"] = builders.arguments(builder, network_parameters, parameters["network_params"])
    return cls(**values)


def _augmentations(value: Any, problem: problems.Problem, schema: Schema) -> tuple[str, ...]:
    if value == "auto":  # named inputs (an image beside numbers): decoded in the model, not augmented
        return () if schema.inputs else problem.default_augment(schema.input_shape)
    names = tuple(value)
    unknown = [name for name in names if name not in problems.AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"--TrainEstimator-augment: unknown augmentation {unknown[0]!r}. Expected auto, or a JSON list of "
            f"{', '.join(problems.AUGMENTATIONS)} (e.g. {json.dumps(list(problems.AUGMENTATIONS[:2]))}, [] for none)."
        )
    if names and schema.inputs:
        raise ValueError(
            f"--TrainEstimator-augment {list(names)}: augmentations apply to the images of an image folder, and "
            "these inputs are named features (decoded inside the model). Use [] (or auto)."
        )
    if names and problems.input_kind(schema.input_shape) != "image":
        raise ValueError(
            f"--TrainEstimator-augment {list(names)}: augmentations apply to images, and these inputs are "
            f"{schema.input_shape[0]} numbers. Use [] (or auto)."
        )
    return names


def describe(settings: Any) -> str:
    """The network and the key hyperparameters in one line, for figure titles and logs."""
    arguments = ", ".join(f"{name} {_compact(value)}" for name, value in sorted(settings.network_args.items()))
    parts = [
        f"{settings.network} ({arguments})" if arguments else settings.network,
        f"learning rate {settings.learning_rate:g}{', cosine decay' if settings.lr_decay else ''}"
        f"{f', {settings.warmup_steps} warm-up steps' if settings.warmup_steps else ''}",
        f"{settings.max_steps} steps of {settings.batch_size}",
        f"seed {settings.seed}",
    ]
    if settings.network_compiles:
        parts[1] = "compiled by the network"
    else:
        chosen = {"optimizer": settings.optimizer, "loss": settings.loss}
        defaults = {"optimizer": compiling.DEFAULT_OPTIMIZER, "loss": problems.get(settings.problem).default_loss}
        parts += [f"{name} {value}" for name, value in chosen.items() if value != defaults[name]]
    if settings.metrics:
        parts.append("metrics: " + ", ".join(str(metric) for metric in settings.metrics))
    if settings.callbacks:
        parts.append(f"callbacks {settings.callbacks}")
    if settings.augment:
        parts.append("augmented: " + ", ".join(settings.augment))
    if settings.patience:
        parts.append(f"patience {settings.patience}")
    return "; ".join(parts)


def _compact(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return str(value)


def as_dict(settings: Any) -> dict[str, Any]:
    """The settings as plain data (what the identity hashes, the marker records and status shows)."""
    return {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)}


def significant(settings: Any, insignificant: Collection[str]) -> dict[str, Any]:
    """The settings that decide the result: all but the insignificant parameters."""
    return {name: value for name, value in as_dict(settings).items() if name not in insignificant}
