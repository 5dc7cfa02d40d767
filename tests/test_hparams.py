"""HParams summaries in every model_dir (pipeline/training/hparams.py), read back by TensorBoard's own
HParams backend: what its HParams tab shows for `tensorboard --logdir models/`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from google.protobuf import json_format
from luigi.freezing import FrozenOrderedDict
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

from pipeline import layout
from pipeline.training import hparams
from tests.conftest import SineRuns


def _session_groups(logdir: str) -> list[api_pb2.SessionGroup]:
    """The rows of the HParams tab, as TensorBoard's backend lists them."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    backend = backend_context.Context(base_plugin.TBContext(data_provider=provider, logdir=logdir))
    request = json_format.Parse(
        json.dumps({"allowedStatuses": ["STATUS_UNKNOWN"], "startIndex": 0, "sliceSize": 100}),
        api_pb2.ListSessionGroupsRequest(),
    )
    response = list_session_groups.Handler(context.RequestContext(), backend, "", request).run()
    return list(response.session_groups)


def test_hparams_tab_compares_every_model_dir(sine_runs: SineRuns) -> None:
    groups = {group.name: group for group in _session_groups(str(sine_runs.root / "models"))}
    assert sorted(groups) == sorted(model.name for model in sine_runs.models.values())  # one row per model

    for name, model in sine_runs.models.items():
        group = groups[model.name]
        (session,) = group.sessions
        assert session.name == f"{model.name}/{layout.EVENTS}"
        # Its hyperparameters: the training configuration, flattened (lists as JSON text).
        config = json.loads((model / layout.TRAIN_CONFIG).read_text())["config"]
        expected = {}
        for key, value in config.items():
            for sub, item in value.items() if isinstance(value, dict) else [("", value)]:
                expected[f"{key}.{sub}" if sub else key] = json.dumps(item) if isinstance(item, list) else item
        shown = json_format.MessageToDict(group)["hparams"]
        assert shown == expected
        assert shown["learning_rate"] == (0.003 if name == "slower" else 0.01)
        assert shown["network_args.hidden_units"] == "[100, 100]"
        assert shown["network"] == "mlp" and shown["max_steps"] == 200
        # Its final metrics: the last evaluation (and training loss) of history.json.
        last = json.loads((model / layout.HISTORY).read_text())[-1]
        values = {(v.name.group, v.name.tag): (v.value, v.training_step) for v in session.metric_values}
        for group_name, split in (("eval", "eval"), ("train", "train")):
            for metric, value in last[split].items():
                assert values[(group_name, metric)] == (pytest.approx(value, rel=1e-6), last["step"])


@dataclasses.dataclass(frozen=True)
class _Settings:
    network: str
    learning_rate: float
    lr_decay: bool
    augment: tuple[str, ...]
    network_args: Any


def test_hparam_values_flatten_a_nested_configuration() -> None:
    config = _Settings("cnn", 0.003, True, ("flip_horizontal", "shift"), FrozenOrderedDict(conv_filters=(16, 32)))
    assert hparams.hparam_values(config) == {
        "network": "cnn",
        "learning_rate": 0.003,
        "lr_decay": True,
        "augment": '["flip_horizontal", "shift"]',  # what the HParams tab can show of a list: its text
        "network_args.conv_filters": "[16, 32]",
    }
    nested = {"network": "mlp", "optimizer": {"name": "adam", "learning_rate": 0.003}, "units": None}
    assert hparams.hparam_values(nested) == {
        "network": "mlp",
        "optimizer.name": "adam",
        "optimizer.learning_rate": 0.003,
    }
