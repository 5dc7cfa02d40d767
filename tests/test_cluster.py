"""Where training runs: TF_CONFIG roles, several hosts, all devices of a host, mixed precision."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline import layout
from pipeline.core import markers
from pipeline.etl import shards, sources
from pipeline.evaluation import evaluate
from pipeline.training import cluster, estimator
from tests.conftest import PROJECT_DIR, VENV_BIN, make_root, run_cli
from tests.test_estimator import small_config


def _tf_config(monkeypatch: pytest.MonkeyPatch, workers: int, index: int, kind: str = "worker") -> None:
    cluster_spec = {"worker": [f"127.0.0.1:{2222 + i}" for i in range(workers)]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster_spec, "task": {"type": kind, "index": index}}))


def test_role_from_tf_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster.role() == cluster.Role(num_workers=1, index=0, chief=True)
    _tf_config(monkeypatch, workers=1, index=0)
    assert cluster.role().chief
    _tf_config(monkeypatch, workers=3, index=2)
    role = cluster.role()
    assert (role.num_workers, role.index, role.chief) == (3, 2, False)
    assert role.write_dir(tmp_path / "m") == tmp_path / "m.worker-2"
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON like"):
        cluster.role()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_workers_train_one_model_together(tmp_path: Path) -> None:
    """MultiWorkerMirroredStrategy over two processes on loopback ports (as two hosts would)."""
    make_root(tmp_path, "[TrainEstimator]\nmax_steps = 100\ncheckpoint_steps = 50\nbatch_size = 64\n")
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    def tf_config(index: int) -> dict[str, str]:
        return {
            **env,
            "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        }

    worker = subprocess.Popen(
        [str(VENV_BIN / "python"), "-m", "pipeline", "worker"], cwd=tmp_path, env=tf_config(1),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    chief = subprocess.run(
        [str(VENV_BIN / "luigi"), "--module", "pipeline", "TrainEstimator", "--local-scheduler"],
        cwd=tmp_path, env=tf_config(0), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    worker_out, worker_err = worker.communicate(timeout=120)
    assert chief.returncode == 0, chief.stderr[-3000:]
    assert worker.returncode == 0, worker_err[-3000:]
    assert "worker 1 of 2: trained to step 100" in worker_out

    (model_dir,) = [p for p in (tmp_path / "models").iterdir() if p.is_dir()]  # no worker scratch left
    marker = markers.read_marker(model_dir)
    assert marker is not None
    assert (marker["info"]["workers"], marker["info"]["replicas"]) == (2, 2)
    for name in (layout.KERAS_MODEL, layout.SAVED_MODEL, layout.CHECKPOINTS + "/ckpt-100.index", layout.EVENTS):
        assert (model_dir / name).exists(), name
    history = json.loads((model_dir / layout.HISTORY).read_text())
    assert [h["step"] for h in history] == [50, 100]
    # The distributed loop's evaluation is exact over the whole validation set:
    # it equals Keras' own evaluation of the exported model.
    (shards_dir,) = [p for p in (tmp_path / "data" / "shards").iterdir() if p.is_dir()]
    metrics = evaluate.evaluate(model_dir, shards_dir)
    assert history[-1]["eval"]["mse"] == pytest.approx(metrics["validation"]["mse"], rel=1e-5)
    assert history[-1]["eval"]["mae"] == pytest.approx(metrics["validation"]["mae"], rel=1e-5)


MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
from pipeline.training import estimator
from tests.test_estimator import small_config
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = estimator.train(small_config(max_steps=100, checkpoint_steps=50), Path(sys.argv[1]), Path(sys.argv[2]),
                         strategy=strategy)
print(json.dumps(result))
"""


def test_mirrored_strategy_over_two_devices(tmp_path: Path) -> None:
    """MirroredStrategy (as on a host with two GPUs), here over two logical CPU devices."""
    shards.create_shards(tmp_path / "shards", sources.SineSource(), {"train": 3, "validation": 2})
    code = MIRRORED.replace("import json, sys", f"import json, sys; sys.path.insert(0, {str(PROJECT_DIR)!r})")
    out = run_cli(["python", "-c", code, str(tmp_path / "shards"), str(tmp_path / "model")], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["strategy"], result["replicas"]) == ("MirroredStrategy", 2)
    model_dir = tmp_path / "model"
    assert [h["step"] for h in json.loads((model_dir / layout.HISTORY).read_text())] == [50, 100]
    for name in (layout.KERAS_MODEL, layout.SAVED_MODEL, layout.CHECKPOINTS, layout.EVENTS):
        assert (model_dir / name).exists()
    assert result["last_eval"]["loss"] < 0.5  # it learned (the data's variance is ~0.5)


def test_mixed_precision_on_cpu(tmp_path: Path) -> None:
    shards.create_shards(tmp_path / "shards", sources.SineSource(), {"train": 3, "validation": 2})
    result = estimator.train(
        small_config(max_steps=200, checkpoint_steps=100, mixed_precision=True), tmp_path / "shards", tmp_path / "m"
    )
    assert result["precision"] == "mixed_bfloat16"  # CPUs: bfloat16 (float16 on GPUs)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for whatever runs next
    model = evaluate.load_model(tmp_path / "m")
    assert model.get_layer("hidden_0").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("hidden_0").kernel.dtype == "float32"  # weights stay float32
    prediction = model.predict(np.zeros((4, 1), "float32"), verbose=0)
    assert prediction.dtype == np.float32
    history = json.loads((tmp_path / "m" / layout.HISTORY).read_text())
    assert history[-1]["eval"]["loss"] < history[0]["eval"]["loss"]
