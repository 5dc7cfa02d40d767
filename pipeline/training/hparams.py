"""TensorBoard HParams summaries of a model_dir: `tensorboard --logdir models/` compares runs.

Each model_dir gets one HParams session in `events/` when its training starts: the
configuration passed to `estimator.train`, flattened to dotted names
(`network_args.units`; lists as JSON text, which is what the HParams tab can
show). Its metrics are the scalars already written below it, `events/train`
and `events/eval` (loss, mse, accuracy... against the global step): the
HParams tab shows each one's last value, the final metrics, in the groups
`train` and `eval`. The session is named after the model folder, so two
models with equal training settings (on other shards) stay two rows.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from pipeline import layout
from pipeline.core.values import flatten


def hparam_values(config: Any) -> dict[str, bool | int | float | str]:
    """A training configuration (a dataclass, or a mapping) as HParams values: flat names, scalars only."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        data = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    else:
        data = dict(config)
    values: dict[str, bool | int | float | str] = {}
    for name, value in flatten(data).items():
        if isinstance(value, (bool, int, float, str)):
            values[name] = value
        elif value is not None:
            values[name] = json.dumps(value, default=str)  # lists, tuples, anything else: as text
    return values


def run_name(model_dir: Path) -> str:
    """The model folder's published name (training writes into its staging folder)."""
    return model_dir.name.removesuffix(layout.STAGING_SUFFIX)


def write_hparams(config: Any, model_dir: Path) -> dict[str, bool | int | float | str]:
    """Write the HParams session of `config` into `model_dir/events`; return the values written."""
    values = hparam_values(config)
    writer = tf.summary.create_file_writer(str(model_dir / layout.EVENTS))
    with writer.as_default():
        hp.hparams(values, trial_id=run_name(model_dir))
    writer.close()
    return values
