"""Where training runs: one CPU or GPU, several GPUs, or several hosts (TF_CONFIG).

TensorFlow's own engines do the work: `MirroredStrategy` over the GPUs of one
host, `MultiWorkerMirroredStrategy` across hosts described by the standard
`TF_CONFIG` environment variable. The chief (worker 0, or the task of type
"chief") writes the model_dir; every other worker writes the same files into
a scratch folder beside it, removed at the end (TensorFlow's documented
pattern: checkpoints and exports are collective, so every worker saves).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def strategy() -> Any:
    """MultiWorkerMirroredStrategy for a cluster, MirroredStrategy for several GPUs, else the default.

    Create it before any other TensorFlow operation: the multi-worker
    strategy configures the runtime's collective operations.
    """
    import tensorflow as tf

    if role().num_workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
