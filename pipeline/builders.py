"""Network builders by name: the built-in ones, or a user's `module:function`.

A builder is called with the keyword arguments `input_shape` (a tuple),
`num_outputs` (1 for regression, the number of classes for classification)
and `problem` ("regression" or "classification"), plus the arguments it
declares: TrainEstimator's parameters of the same name (`hidden_units` for
the mlp) and the entries of `--TrainEstimator-network-params`. It returns an
uncompiled `keras.Model`; the pipeline compiles it with the problem's loss and
metrics.

Standard library only at import: on Luigi's scheduling path a builder is found
and its signature read from the module's AST, without importing the module
(which imports Keras). Whether it returns a fitting model is checked once per
version of its code, in a child process (`python -m pipeline.builders`), and
remembered in `<root>/.cache/network_checks.json`.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.core import identity, values

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
    if ":" not in network:
        if network not in BUILT_IN:
            raise ValueError(
                f"{flag} must be auto, one of {', '.join(BUILT_IN)}, or module:function for a network of your own "
                f"(e.g. my_models:build_tiny). Received: {network!r}"
            )
        module, function = BUILT_IN_MODULE, f"build_{network}"
    else:
        module, _, function = network.partition(":")
        if not module or not function or not all(part.isidentifier() for part in [*module.split("."), function]):
            raise ValueError(f"{flag} must look like module:function, e.g. my_models:build_tiny. Received: {network!r}")
    located = identity.find_module(module, [os.fspath(paths.PROJECT_DIR)] if ":" not in network else paths.user_roots())
    if located is None:
        where = ", ".join(paths.user_roots())
        raise ValueError(
            f"{flag} {network}: no module {module!r} in the working directory or on PYTHONPATH ({where}). "
            f"Put {module.replace('.', '/')}.py there (or add its folder to PYTHONPATH)."
        )
    path = located[0]
    tree = ast.parse(path.read_bytes())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            arguments = node.args
            names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
            return Builder(network, module, function, path, tuple(names), arguments.kwarg is not None)
    defined = {
        target.id
        for node in tree.body
        for target in (
            node.targets
            if isinstance(node, ast.Assign)
            else [ast.Name(alias.asname or alias.name) for alias in node.names]
            if isinstance(node, (ast.Import, ast.ImportFrom))
            else []
        )
        if isinstance(target, ast.Name)
    }
    if function in defined:  # assigned or imported: its signature is only known by running it
        return Builder(network, module, function, path, None, True)
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    raise ValueError(
        f"{flag} {network}: {path} defines no function {function!r}"
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


# --- the check: does it build a model that fits? ----------------------------------------

CHECKS_FILE = "network_checks.json"


def check(builder: Builder, call: Mapping[str, Any], code: Mapping[str, str]) -> None:
    """Build the user's network once per version of its code and arguments; raise ValueError if it does not fit.

    `call` holds every keyword argument (CALL_ARGUMENTS and the rest), `code`
    the digests of the builder's module and the modules it imports. The
    verdict is remembered under the artifact root, so an up-to-date run
    imports no Keras.
    """
    key = values.digest({"network": builder.network, "call": call, "code": code, "versions": _versions()})
    cache_path = paths.cache_dir() / CHECKS_FILE
    try:
        verdicts = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        verdicts = {}
    if key not in verdicts:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(paths.user_roots()))
        request = json.dumps({"network": builder.network, "call": call})
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.builders", request], capture_output=True, text=True, env=env
        )
        try:
            verdicts[key] = json.loads(out.stdout.strip().splitlines()[-1])["error"]
        except (ValueError, KeyError, IndexError):
            raise ValueError(
                f"--TrainEstimator-network {builder.network}: checking it failed:\n{out.stderr[-2000:]}"
            ) from None
        with contextlib.suppress(OSError):
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f"{CHECKS_FILE}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(verdicts, indent=1))
            os.replace(tmp, cache_path)
    if verdicts[key]:
        raise ValueError(f"--TrainEstimator-network {builder.network}: {verdicts[key]}")


def _versions() -> dict[str, str]:
    return identity.framework_versions()


def verdict(network: str, call: Mapping[str, Any]) -> str | None:
    """Build the network (imports Keras) and say why it does not fit, or None. Run by `check` in a child."""
    import numpy as np

    from pipeline import problems

    builder = find(network)
    function = load(builder.network)
    arguments = dict(call, input_shape=tuple(call["input_shape"]))
    shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    try:
        model = function(**arguments)
    except Exception as error:  # the user's code: any failure is theirs to see
        return f"{builder.function}({shown}) raised {type(error).__name__}: {error}"
    import keras

    if not isinstance(model, keras.Model):
        return f"{builder.function}() returned a {type(model).__name__}, not a keras.Model."
    problem = problems.get(call["problem"])
    sample = np.random.default_rng(0).uniform(size=(2, *arguments["input_shape"])).astype("float32")
    try:
        outputs = np.asarray(model(sample, training=False), dtype=np.float64)
    except Exception as error:
        return f"the model from {builder.function}() fails on inputs of shape {sample.shape[1:]}: {error}"
    wrong = problem.check_outputs(outputs, call["num_outputs"])
    if wrong:
        return f"the model from {builder.function}() does not fit the {problem.name}: {wrong}."
    return None


def load(network: str) -> Callable[..., Any]:
    """The builder function `network` names (`find`: `mlp`, `cnn` or a user's `module:function`), imported:
    a user's with the working directory and PYTHONPATH (paths.user_roots) first on the path; raise
    ValueError for a missing module or function."""
    from pipeline import networks  # Keras: only where a network is built

    found = find(network)
    if found.built_in:
        built_in: Callable[..., Any] = getattr(networks, found.function)
        return built_in
    for root in reversed(paths.user_roots()):
        if root not in sys.path:
            sys.path.insert(0, root)
    function: Callable[..., Any] = getattr(importlib.import_module(found.module), found.function)
    return function


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    print(json.dumps({"error": verdict(request["network"], request["call"])}))
