"""Where training runs: one CPU or GPU, or all the GPUs of a host.

TensorFlow's own engines do the work: `MirroredStrategy` over the GPUs of one
host. Hosts are described by the standard `TF_CONFIG` environment variable;
in a cluster the chief (worker 0, or the task of type "chief") writes the
model_dir and every other worker would write the same files into a scratch
folder beside it (TensorFlow's documented pattern). Training across hosts
is refused for now: see `strategy()`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Role:
    """This process's place in a training cluster."""

    num_workers: int
    index: int
    chief: bool

    def write_dir(self, model_dir: Path) -> Path:
        """Where this process writes: the model_dir for the chief, a scratch folder for the others."""
        return model_dir if self.chief else model_dir.with_name(f"{model_dir.name}.worker-{self.index}")


def tf_config() -> dict[str, Any]:
    """The parsed TF_CONFIG ({} when unset)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
        missing = [key for key in ("type", "index") if key not in config["task"]]
        if "cluster" not in config or missing:
            raise KeyError(", ".join(missing) or "cluster")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            f'"task": {{"type": "worker", "index": 0}}}}. Received: TF_CONFIG={text!r} ({error})'
        ) from None
    return dict(config)


def role() -> Role:
    """This process's role, from TF_CONFIG (one worker when it is unset)."""
    config = tf_config()
    if not config:
        return Role(num_workers=1, index=0, chief=True)
    cluster, task = config["cluster"], config["task"]
    num_workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    chief = task["type"] == "chief" or (task["type"] == "worker" and task["index"] == 0 and "chief" not in cluster)
    return Role(num_workers=num_workers, index=int(task["index"]), chief=chief)


def check_single_host() -> None:
    """Refuse a TF_CONFIG of several workers, with the reason (see `strategy()`)."""
    if role().num_workers > 1:
        raise PipelineError(
            "TF_CONFIG names several workers, but training across hosts is not supported yet: Keras 3's "
            "fit does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585). Unset TF_CONFIG "
            "to train on this host (all its GPUs are used)."
        )


def strategy() -> Any:
    """MirroredStrategy for several GPUs, else the default strategy (the CPU or one GPU).

    A TF_CONFIG naming several workers is refused with the reason: Keras 3's
    `fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras
    issue 20585, still open with Keras 3.15: it fails reducing the first batch
    and the per-replica logs). Training across hosts needs a custom
    distributed loop, which this project does not have yet.
    """
    import tensorflow as tf

    check_single_host()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
