"""Network builders by name: the built-in ones, or a user's `module:function`.

A builder is called with the keyword arguments `input_shape` (a tuple),
`num_outputs` (1 for regression, the number of classes for classification)
and `problem` ("regression" or "classification"), plus the arguments it
declares: TrainEstimator's parameters of the same name (`hidden_units` for
the mlp) and the entries of `--TrainEstimator-network-params`. It returns a
`keras.Model`: uncompiled, and the pipeline compiles it with the problem's (or
the chosen) optimizer, loss and metrics; or compiled, and those are kept.

Standard library only at import: on Luigi's scheduling path a builder (or any
`module:function` of the user's: a loss, a metric, callbacks) is found and its
signature read from the module's AST, without importing the module (which
imports Keras). A user's modules are looked for in the working directory (the
project folder too) and on PYTHONPATH. Whether a builder returns a fitting
model (and the rest of the user's code fits) is checked before any work by
TrainEstimator (training/builder_check.py), not here: this module is in the
training's code identity, the check is not.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import modules
from pipeline.core.modules import user_roots  # where a user's modules are (a network, a source)

# The folder that holds the package: where the built-in builders' module is found.
PROJECT_DIR = Path(__file__).resolve().parent.parent

BUILT_IN_MODULE = "pipeline.networks"
BUILT_IN = ("mlp", "cnn")  # `build_<name>` in pipeline/networks.py
CALL_ARGUMENTS = ("input_shape", "num_outputs", "problem")  # what every builder is called with


@dataclass(frozen=True)
class Builder:
    """Where a network builder is, and what its definition says it takes."""

    network: str  # as given: "mlp", or "my_models:build_tiny"
    module: str
    function: str
    path: Path
    parameters: tuple[str, ...] | None  # the keyword arguments it names; None when its signature is unknown
    var_keyword: bool  # it takes **kwargs

    @property
    def built_in(self) -> bool:
        return self.module == BUILT_IN_MODULE

    def accepts(self, name: str) -> bool:
        return self.var_keyword or self.parameters is None or name in self.parameters


def find(network: str, flag: str = "--TrainEstimator-network") -> Builder:
    """The builder `network` names, from its source; raise ValueError for a missing module or function."""
    if ":" in network:
        return locate(network, flag)
    if network not in BUILT_IN:
        raise ValueError(
            f"{flag} must be auto, one of {', '.join(BUILT_IN)}, or module:function for a network of your own "
            f"(e.g. my_models:build_tiny). Received: {network!r}"
        )
    located = modules.find_module(BUILT_IN_MODULE, [os.fspath(PROJECT_DIR)])
    assert located is not None, "the package's own networks module"
    return _defined(network, BUILT_IN_MODULE, f"build_{network}", located[0], flag)


def locate(spec: str, flag: str) -> Builder:
    """Where a user's `module:function` is (a function, a class, or a name its module assigns or imports),
    from the module's source, without importing it; raise ValueError naming the folders searched."""
    module, _, function = spec.partition(":")
    if not module or not function or not all(part.isidentifier() for part in [*module.split("."), function]):
        raise ValueError(f"{flag} must look like module:function, e.g. my_models:build_tiny. Received: {spec!r}")
    roots = user_roots()
    located = modules.find_module(module, roots)
    if located is None:
        kinds = ["the working directory", *["PYTHONPATH"] * (len(roots) - 1)]
        where = ", ".join(f"{root} ({kind})" for root, kind in zip(roots, kinds, strict=True))
        raise ValueError(
            f"{flag} {spec}: no module {module!r} in the folders searched: {where}. "
            f"Put {module.replace('.', '/')}.py in one of them (or add its folder to PYTHONPATH)."
        )
    return _defined(spec, module, function, located[0], flag)


def _defined(spec: str, module: str, function: str, path: Path, flag: str) -> Builder:
    """The definition of `function` at the top of `path`, and the keyword arguments it names."""
    tree = ast.parse(path.read_bytes())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            arguments = node.args
            names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
            return Builder(spec, module, function, path, tuple(names), arguments.kwarg is not None)
    defined = {
        target.id
        for node in tree.body
        for target in (
            node.targets
            if isinstance(node, ast.Assign)
            else [ast.Name(alias.asname or alias.name) for alias in node.names]
            if isinstance(node, (ast.Import, ast.ImportFrom))
            else [ast.Name(node.name)]
            if isinstance(node, ast.ClassDef)
            else []
        )
        if isinstance(target, ast.Name)
    }
    if function in defined:  # a class, or assigned or imported: its signature is only known by running it
        return Builder(spec, module, function, path, None, True)
    functions = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    raise ValueError(
        f"{flag} {spec}: {path} defines no function {function!r}"
        f"{' (it defines: ' + ', '.join(functions) + ')' if functions else ''}."
    )


def arguments(builder: Builder, parameters: Mapping[str, Any], network_params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments `builder` is called with beside CALL_ARGUMENTS.

    TrainEstimator's `parameters` whose names the builder declares, then the
    entries of `network_params`; raise ValueError for an entry the builder
    does not take or one that is a TrainEstimator parameter of its own.
    """
    if builder.parameters is not None and not builder.var_keyword:
        missing = [name for name in CALL_ARGUMENTS if name not in builder.parameters]
        if missing:
            raise ValueError(
                f"--TrainEstimator-network {builder.network}: {builder.function}() must take the keyword arguments "
                f"{', '.join(CALL_ARGUMENTS)}. It lacks: {', '.join(missing)}."
            )
    chosen = {
        name: value
        for name, value in parameters.items()
        if builder.parameters is not None and name in builder.parameters and name not in CALL_ARGUMENTS
    }
    for name, value in network_params.items():
        if name in CALL_ARGUMENTS or name in parameters:
            raise ValueError(
                f"--TrainEstimator-network-params sets {name!r}, which the pipeline sets itself"
                f"{'' if name in CALL_ARGUMENTS else ' (use --TrainEstimator-' + name.replace('_', '-') + ')'}."
            )
        if not builder.accepts(name):
            takes = [p for p in builder.parameters or () if p not in CALL_ARGUMENTS]
            raise ValueError(
                f"--TrainEstimator-network-params: {builder.function}() takes no argument {name!r}"
                f" (it takes: {', '.join(takes) or 'nothing beyond ' + ', '.join(CALL_ARGUMENTS)})."
            )
        chosen[name] = value
    return dict(sorted(chosen.items()))


def load(network: str) -> Callable[..., Any]:
    """The builder function `network` names (`find`: `mlp`, `cnn` or a user's `module:function`), imported:
    a user's with the working directory and PYTHONPATH (user_roots) first on the path; raise
    ValueError for a missing module or function."""
    from pipeline import networks  # Keras: only where a network is built

    found = find(network)
    if found.built_in:
        built_in: Callable[..., Any] = getattr(networks, found.function)
        return built_in
    function: Callable[..., Any] = import_object(found)
    return function


def import_object(found: Builder) -> Any:
    """The object a user's `module:function` names, imported with the working directory and PYTHONPATH
    (user_roots) first on the path."""
    for root in reversed(user_roots()):
        if root not in sys.path:
            sys.path.insert(0, root)
    return getattr(importlib.import_module(found.module), found.function)


def import_user(spec: str) -> Any:
    """A user's loss, metric or callbacks function (or class) `spec` names, imported (`import_object`).

    A loss or metric is registered as Keras-serializable (under its module's
    name) unless it is already: the saved model names it, and reloads in safe
    mode once its module is imported again (`register_user_objects`).
    """
    import contextlib

    import keras

    found = locate(spec, "")
    value = import_object(found)
    with contextlib.suppress(ValueError, TypeError):  # what cannot be registered is not saved by name either
        if keras.saving.get_registered_name(value) == getattr(value, "__name__", None):
            keras.saving.register_keras_serializable(package=found.module)(value)
    return value


def register_user_objects(config: Mapping[str, Any]) -> None:
    """Import the user's losses and metrics that `config` (train_config.json's) names: before loading a model."""
    for spec in [config.get("loss"), *config.get("metrics", ())]:
        if isinstance(spec, str) and ":" in spec:
            try:
                import_user(spec)
            except (ValueError, ImportError, AttributeError):  # gone: loading the model says what is missing
                continue


def takes_input_spec(builder: Builder) -> bool:
    """Whether a builder names `input_spec` (named inputs: name -> {"dtype", "shape"}) among its arguments: it
    then gets the raw named inputs of a source of the user's, not the vector the pipeline's preprocessing makes."""
    return builder.parameters is not None and "input_spec" in builder.parameters
