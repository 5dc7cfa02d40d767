"""The user's code, run once before any work: does it fit the training? Checked once per version.

TrainEstimator's parameter check. What only running the user's code can tell
(that a network builder returns a model that fits, and whether it compiled it
itself and with what; that a loss returns one value per example; that a
metric applies to the problem's labels; that the optimizer takes its
arguments; that the callbacks function returns callbacks) is found out in a
child process (`python -m pipeline.training.builder_check`, which imports
Keras) on a sample batch, and the verdict is remembered in
`<root>/.cache/compile_checks.json` under a digest of the request, the user's
code and the framework versions, so an up-to-date run imports no Keras.
Imported by tasks.py only: in no stage's code identity.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from typing import Any

from pipeline import builders, problems
from pipeline.core import child_check, identity, modules, values
from pipeline.training.compiling import COMPILE_FIELDS, FLAG, callbacks, instance, optimizer


def user_modules(config: Any) -> list[str]:
    """The user's modules the training runs: the network's, the loss's, the metrics' and the callbacks'."""
    specs = [config.network, config.loss, *config.metrics, config.callbacks]
    found = [spec.partition(":")[0] for spec in specs if isinstance(spec, str) and ":" in spec]
    return list(dict.fromkeys(found))


def user_code(config: Any) -> dict[str, str]:
    """Code digests of the user's modules (`user_modules`) and the modules of theirs they import."""
    closure = identity.code_closure(user_modules(config), modules.user_roots())
    return {label: identity.file_code_digest(path) for label, path in closure.items()}


CHECKS_FILE = "compile_checks.json"


def check(request: Mapping[str, Any], code: Mapping[str, str]) -> dict[str, Any]:
    """Run `verdict(request)` once per version of the code it runs; raise ValueError naming what does not fit.

    `request`: the network and its call, the loss, the metrics, the
    callbacks and the optimizer's arguments as resolved; `code`: the digests
    of the user's modules. Returns what the check found: `compiled`, the
    optimizer, loss and metrics of a network that compiles itself, or None.
    """
    found: dict[str, Any] = child_check.verdict(
        CHECKS_FILE,
        "pipeline.training.builder_check",
        request,
        {"request": request, "code": code, "versions": identity.framework_versions()},
        "Checking the training's code failed",
    )
    if found.get("error"):
        raise ValueError(found["error"])
    return found


def checked(config: Any, parameters: Mapping[str, Any], call: Mapping[str, Any]) -> Any:
    """`config` (the resolved TrainSettings) once the user's code has been run on a sample (`check`).

    `parameters` are the task's, `call` what the builder is called with
    beside its network arguments (input_shape, num_outputs, problem). A
    network that compiles itself replaces the optimizer, loss and metrics
    with its own (what the identity hashes and status shows); setting them
    too is refused, as they would be ignored.
    """
    problem = problems.get(config.problem)
    user_network = not builders.find(config.network).built_in
    defaults = config.loss == problem.default_loss and not config.metrics and not config.optimizer_params
    if not user_network and defaults and not config.callbacks:
        return config  # nothing of the user's to run, nothing but Keras' defaults
    request = {
        "network": config.network if user_network else None,
        "call": {**values.normalise(config.network_args), **call},
        "label_shape": list(problem.label_shape),
        **{name: values.normalise(getattr(config, name)) for name in COMPILE_FIELDS},
        "callbacks": config.callbacks,
    }
    compiled = check(request, user_code(config)).get("compiled")
    if not compiled:
        return config
    chosen = [name for name in COMPILE_FIELDS if parameters[name] != "auto" and len(parameters[name])]
    if chosen:
        flags = ", ".join(FLAG + name.replace("_", "-") for name in chosen)
        raise ValueError(
            f"{FLAG}network {config.network} compiles the model itself: its optimizer, loss and metrics are kept, "
            f"and {flags} would be ignored. Leave {'them' if len(chosen) > 1 else 'it'} unset, or return the model "
            "uncompiled."
        )
    return dataclasses.replace(
        config,
        optimizer=compiled["optimizer"],
        optimizer_params={},
        loss=compiled["loss"],
        metrics=tuple(compiled["metrics"] or ()),
        network_compiles=True,
    )


# --- in the child: run the user's code once -------------------------------------------------


def _short(value: Any) -> Any:
    """A compile setting as recorded: a name, or a class with its configuration."""
    if isinstance(value, Mapping) and "class_name" in value:
        if value["class_name"] == "function":
            return str(value["config"])
        return {"class_name": value["class_name"], **dict(value.get("config") or {})}
    if isinstance(value, (list, tuple)):
        return [_short(v) for v in value]
    return value


def _per_example(what: str, spec: str, result: Any, batch: int, labels: Any, outputs: Any) -> str | None:
    shape = tuple(result.shape)
    if shape == () or (shape[0] == batch and int(result.size) == batch):
        return None
    return (
        f"{FLAG}{what} {spec}: returns values of shape {shape} for a batch of {batch} (labels {tuple(labels.shape)}, "
        f"predictions {tuple(outputs.shape)}); it must return one value per example, shape ({batch},): "
        "reduce over the last axis, and compare labels and predictions of the same shape."
    )


def build_checked(network: str, call: Mapping[str, Any]) -> tuple[Any, str | None]:
    """Build the user's network (imports Keras): the model, or None and why it does not fit."""
    import keras
    import numpy as np

    builder = builders.find(network)
    function = builders.load(builder.network)
    arguments = dict(call, input_shape=tuple(call["input_shape"]))
    shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    try:
        model = function(**arguments)
    except Exception as error:  # the user's code: any failure is theirs to see
        return None, f"{builder.function}({shown}) raised {type(error).__name__}: {error}"
    if not isinstance(model, keras.Model):
        return None, f"{builder.function}() returned a {type(model).__name__}, not a keras.Model."
    problem = problems.get(call["problem"])
    sample = _sample(call, 2)
    try:
        outputs = np.asarray(model(sample, training=False), dtype=np.float64)
    except Exception as error:
        shapes = {k: list(v.shape[1:]) for k, v in sample.items()} if isinstance(sample, dict) else sample.shape[1:]
        return None, f"the model from {builder.function}() fails on inputs of shape {shapes}: {error}"
    wrong = problem.check_outputs(outputs, call["num_outputs"])
    if wrong:
        return None, f"the model from {builder.function}() does not fit the {problem.name}: {wrong}."
    return model, None


def _sample(call: Mapping[str, Any], batch: int) -> Any:
    """A batch of sample inputs for the network `call` builds: uniform numbers, or with named inputs (a
    source of the user's, `input_spec`) one tensor each."""
    import numpy as np

    if "input_spec" not in call:
        return np.random.default_rng(0).uniform(size=(batch, *call["input_shape"])).astype("float32")
    import tensorflow as tf

    def image(shape: list[int]) -> Any:  # a gray PNG of the recorded shape, as image bytes would be
        return tf.fill([batch], tf.io.encode_png(tf.fill(shape, tf.constant(128, tf.uint8))))

    return {
        name: image(spec["image_shape"])
        if spec.get("encoding") == "image"
        else tf.fill([batch, *spec["shape"]], "a")
        if spec["dtype"] == "string"
        else tf.zeros([batch, *spec["shape"]], spec["dtype"])
        for name, spec in call["input_spec"].items()
    }


def verdict(request: Mapping[str, Any]) -> dict[str, Any]:
    """Run the user's code on a sample batch and say what does not fit (imports Keras). Run by `check`."""
    import tempfile
    import types

    import keras
    import numpy as np

    call = request["call"]
    problem = problems.get(call["problem"])
    batch = 4
    rng = np.random.default_rng(0)
    compiled = None
    if request["network"]:
        model, error = build_checked(request["network"], call)
        if error:
            return {"error": f"{FLAG}network {request['network']}: {error}"}
        outputs = np.asarray(model(_sample(call, batch), training=False), dtype="float32")
        if model.compiled:
            config = model.get_compile_config()
            compiled = {name: _short(config.get(name)) for name in ("optimizer", "loss", "metrics")}
    else:
        outputs = rng.uniform(size=(batch, call["num_outputs"])).astype("float32")
        if problem.name == "classification":
            outputs = outputs / outputs.sum(axis=-1, keepdims=True)
    if problem.name == "classification":
        labels = rng.integers(0, call["num_outputs"], size=(batch, *request["label_shape"]))
    else:
        labels = rng.uniform(size=(batch, *request["label_shape"])).astype("float32")
    run = {"learning_rate": 0.001, "lr_decay": False, "warmup_steps": 0, "max_steps": 100, "checkpoint_steps": 10}
    config = types.SimpleNamespace(**request, **run, problem=problem.name)
    try:
        optimizer(config)
    except (TypeError, ValueError) as error:
        return {"error": f"{FLAG}optimizer-params {json.dumps(request['optimizer_params'])}: {error}"}
    checks = [("loss", request["loss"])] if request["loss"] != problem.default_loss else []
    checks += [("metrics", name) for name in request["metrics"]]
    for what, spec in checks:
        try:
            made = instance(spec) if ":" in spec else (keras.losses.get if what == "loss" else keras.metrics.get)(spec)
            if isinstance(made, keras.metrics.Metric):
                made.update_state(labels, outputs)
                result = np.asarray(made.result())
                if result.size != 1:  # a vector (one value per class): not one number a curve or a table shows
                    return {"error": f"{FLAG}{what} {spec}: its result has shape {result.shape}, not one number."}
                continue
            elif isinstance(made, keras.losses.Loss):
                result = np.asarray(made.call(labels, outputs))  # unreduced: one value per example
            else:
                result = np.asarray(made(labels, outputs))
        except Exception as error:  # the user's code, or a Keras metric that does not apply: theirs to see
            return {
                "error": f"{FLAG}{what} {spec} fails on the {problem.name}'s labels and predictions: "
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            }
        wrong = _per_example(what, spec, result, batch, labels, outputs)
        if wrong:
            return {"error": wrong}
    if request["callbacks"]:
        with tempfile.TemporaryDirectory() as folder:
            try:
                callbacks(config, folder)
            except ValueError as error:
                return {"error": str(error)}
            except Exception as error:
                return {"error": f"{FLAG}callbacks {request['callbacks']} raised {type(error).__name__}: {error}"}
    return {"error": None, "compiled": compiled}


if __name__ == "__main__":
    print(json.dumps(verdict(json.loads(sys.argv[1]))))
