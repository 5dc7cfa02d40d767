"""Does a user's network builder return a model that fits? Checked before any work, once per version.

TrainEstimator's parameter check: the builder is called in a child process
(`python -m pipeline.training.builder_check`, which imports Keras) on the
call's arguments, and the verdict is remembered in
`<root>/.cache/network_checks.json` under a digest of the call, the builder's
code and the framework versions, so an up-to-date run imports no Keras.
Imported by tasks.py only: in no stage's code identity.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from pipeline import builders, paths
from pipeline.builders import Builder, find, load
from pipeline.core import identity, values

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
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(builders.user_roots()))
        request = json.dumps({"network": builder.network, "call": call})
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.training.builder_check", request], capture_output=True, text=True, env=env
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
    sample: Any = np.random.default_rng(0).uniform(size=(2, *arguments["input_shape"])).astype("float32")
    if "input_spec" in call:  # named inputs (a source of the user's): one sample tensor each
        import tensorflow as tf

        sample = {
            name: tf.fill([2, *spec["shape"]], "a")
            if spec["dtype"] == "string"
            else tf.zeros([2, *spec["shape"]], spec["dtype"])
            for name, spec in call["input_spec"].items()
        }
    try:
        outputs = np.asarray(model(sample, training=False), dtype=np.float64)
    except Exception as error:
        shapes = {k: list(v.shape[1:]) for k, v in sample.items()} if isinstance(sample, dict) else sample.shape[1:]
        return f"the model from {builder.function}() fails on inputs of shape {shapes}: {error}"
    wrong = problem.check_outputs(outputs, call["num_outputs"])
    if wrong:
        return f"the model from {builder.function}() does not fit the {problem.name}: {wrong}."
    return None


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    print(json.dumps({"error": verdict(request["network"], request["call"])}))
