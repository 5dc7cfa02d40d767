"""Your model_fn: a loss, metrics, an optimizer and callbacks of your choosing (pipeline/training/compiling.py).

Everything runs through the real `luigi` command in a user's folder holding
their modules, as a user would: the README's example trains with the user's
loss, metric and callback, evaluates and plots with the metrics chosen; edits
of those modules rerun training and below, comment-only edits nothing; a
callback that raises stops the run (exit code 30) with the checkpoints kept;
a kill and a resume end with the weights of an unbroken run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT_HERE, run_cli
from tests.test_rerun import ran_in_summary

ALL = {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"}
BELOW = {"TrainEstimator", "EvaluateEstimator", "PlotInference"}

# docs/your-experiment.md's examples, word for word (test_the_docs_show_these_examples checks they agree).
MY_LOSSES = """\
from keras import ops


def scaled_mse(y_true, y_pred):
    return 2.0 * ops.mean(ops.square(y_true - y_pred), axis=-1)


def within_tenth(y_true, y_pred):
    return ops.mean(ops.cast(ops.abs(y_true - y_pred) < 0.1, "float32"), axis=-1)
"""

MY_CALLBACKS = """\
import keras


def make(max_steps):
    # Halve the learning rate every evaluation interval (Keras' "epoch" here): from the epoch
    # Keras passes, not from a count of its own, so a resumed training gets the same rates.
    return [keras.callbacks.LearningRateScheduler(lambda epoch, rate: 0.01 * 0.5**epoch)]
"""

CHOICES = [
    "--TrainEstimator-loss", "my_losses:scaled_mse",
    "--TrainEstimator-metrics", '["mape", "my_losses:within_tenth"]',
    "--TrainEstimator-optimizer", "adamw", "--TrainEstimator-optimizer-params", '{"weight_decay": 0.001}',
    "--TrainEstimator-callbacks", "my_callbacks:make", "--TrainEstimator-lr-decay", "false",
]  # fmt: skip


def _luigi(work: Path, *args: str, task: str = "PlotInference", env: dict[str, str] | None = None) -> tuple[int, str]:
    out = run_cli(["luigi", "--module", "pipeline", task, "--local-scheduler", *args], cwd=work, env=env)
    return out.returncode, out.stderr


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A user's folder: their modules, and a luigi.cfg with a short training."""
    (tmp_path / "my_losses.py").write_text(MY_LOSSES)
    (tmp_path / "my_callbacks.py").write_text(MY_CALLBACKS)
    (tmp_path / "luigi.cfg").write_text(
        f"{ROOT_HERE}[TrainEstimator]\nbatch_size = 64\nmax_steps = 300\ncheckpoint_steps = 100\n"
        "steps_per_execution = 50\n"
    )
    return tmp_path


def test_the_users_loss_metrics_optimizer_and_callbacks_train_evaluate_and_plot(work: Path) -> None:
    code, log = _luigi(work, *CHOICES)
    assert code == 0, log[-3000:]
    assert ran_in_summary(log) == ALL
    (model_dir,) = (work / "models").glob("sine-mlp-*")
    config = json.loads((model_dir / "train_config.json").read_text())["config"]
    assert config["loss"] == "my_losses:scaled_mse" and config["metrics"] == ["mape", "my_losses:within_tenth"]
    assert config["optimizer"] == "adamw" and config["optimizer_params"] == {"weight_decay": 0.001}
    assert config["callbacks"] == "my_callbacks:make"
    marker = json.loads((model_dir / "_SUCCESS.json").read_text())
    assert {"my_losses.py", "my_callbacks.py"} <= set(marker["code"])  # the user's source is part of the identity
    history = json.loads((model_dir / "history.json").read_text())
    assert [h["step"] for h in history] == [100, 200, 300]
    last = history[-1]["eval"]
    # The loss is the user's: twice the MSE the problem's own metric measures on the same batches.
    assert last["loss"] == pytest.approx(2 * last["mse"], rel=1e-4)
    assert 0 < last["within_tenth"] < 1 and last["mape"] > 0
    (metrics_dir,) = (work / "reports").glob("sine-mlp-eval-*")
    report = json.loads((metrics_dir / "metrics.json").read_text())
    validation = report["validation"]
    assert report["chosen_metrics"] == ["mape", "within_tenth"]
    assert validation["num_examples"] == 341 and 0 < validation["within_tenth"] < 1 and validation["mape"] > 0
    # Over the whole split, as the last evaluation measured it (the same weights, the same examples).
    assert validation["within_tenth"] == pytest.approx(last["within_tenth"], rel=1e-4)
    assert validation["mse"] == pytest.approx(last["mse"], rel=1e-4)
    info = json.loads((metrics_dir / "_SUCCESS.json").read_text())["info"]
    assert set(info["validation"]) == {"mse", "rmse", "mae", "mape", "within_tenth"}
    runs = run_cli(["python", "-m", "pipeline", "runs", "--json"], cwd=work)
    assert runs.returncode == 0, runs.stderr[-2000:]
    (run,) = json.loads(runs.stdout)
    assert run["metrics"]["validation.within_tenth"] == pytest.approx(validation["within_tenth"])
    (plots_dir,) = (work / "reports").glob("sine-mlp-plots-*")
    assert (plots_dir / "training_curves.png").is_file()
    from pipeline.evaluation.figures import PlottedModel

    (shards_dir,) = (work / "data" / "shards").glob("sine-*")
    plotted = PlottedModel(model_dir, shards_dir, metrics_dir, "run")
    assert plotted.curve_metrics() == ["mape", "within_tenth"] and plotted.loss_name() == "my_losses:scaled_mse"

    # A comment, a docstring or formatting in the user's modules: nothing reruns.
    (work / "my_losses.py").write_text(MY_LOSSES.replace("def scaled_mse", "# twice\ndef scaled_mse"))
    (work / "my_callbacks.py").write_text(MY_CALLBACKS + "\n# the end\n")
    code, log = _luigi(work, *CHOICES)
    assert code == 0 and "Did not run any tasks" in log, log[-3000:]

    # The loss itself: training and the stages below it.
    (work / "my_losses.py").write_text(MY_LOSSES.replace("2.0 * ops.mean", "3.0 * ops.mean"))
    status = run_cli(["python", "-m", "pipeline", "status", "PlotInference", *CHOICES], cwd=work).stdout
    assert "code in my_losses.py changed" in status
    code, log = _luigi(work, *CHOICES)
    assert code == 0, log[-3000:]
    assert ran_in_summary(log) == BELOW

    # The callbacks module: the same.
    (work / "my_callbacks.py").write_text(MY_CALLBACKS.replace("0.5**epoch", "0.7**epoch"))
    code, log = _luigi(work, *CHOICES)
    assert code == 0, log[-3000:]
    assert ran_in_summary(log) == BELOW


# A loss and a metric as Keras-serializable classes (keras.losses.Loss, keras.metrics.Metric), with a
# configuration of their own: saved by their registered name with the model, reloaded in safe mode.
MY_OBJECTS = """\
import keras
from keras import ops


class ScaledMSE(keras.losses.Loss):
    def __init__(self, scale=2.0, name="scaled_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale = scale

    def call(self, y_true, y_pred):
        return self.scale * ops.mean(ops.square(y_true - y_pred), axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class WithinTenth(keras.metrics.Metric):
    # Stateful: the share of predictions within 0.1 of the label, over every batch since the last reset.
    def __init__(self, name="within_tenth", **kwargs):
        super().__init__(name=name, **kwargs)
        self.hits = self.add_variable(shape=(), initializer="zeros", name="hits")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        close = ops.cast(ops.abs(y_true - y_pred) < 0.1, "float32")
        self.hits.assign_add(ops.sum(close))
        self.count.assign_add(ops.cast(ops.size(close), "float32"))

    def result(self):
        return self.hits / ops.maximum(self.count, 1.0)
"""
CLASSES = ["--TrainEstimator-loss", "my_objects:ScaledMSE", "--TrainEstimator-metrics", '["my_objects:WithinTenth"]']


def test_a_loss_and_a_metric_as_keras_classes_train_evaluate_in_safe_mode_and_rerun_when_edited(work: Path) -> None:
    import zipfile

    (work / "my_objects.py").write_text(MY_OBJECTS)
    short = ["--TrainEstimator-max-steps", "100", "--TrainEstimator-checkpoint-steps", "50"]
    code, log = _luigi(work, *CLASSES, *short, task="EvaluateEstimator")
    assert code == 0, log[-3000:]
    assert ran_in_summary(log) == {"CreateShards", "TrainEstimator", "EvaluateEstimator"}
    (model_dir,) = (work / "models").glob("sine-mlp-*")
    config = json.loads((model_dir / "train_config.json").read_text())["config"]
    assert config["loss"] == "my_objects:ScaledMSE" and config["metrics"] == ["my_objects:WithinTenth"]
    assert "my_objects.py" in json.loads((model_dir / "_SUCCESS.json").read_text())["code"]
    last = json.loads((model_dir / "history.json").read_text())[-1]["eval"]
    assert last["loss"] == pytest.approx(2 * last["mse"], rel=1e-4)  # the class's loss, at its default scale
    assert 0 < last["within_tenth"] < 1
    # Saved by their registered names, which EvaluateEstimator's safe-mode load resolved.
    with zipfile.ZipFile(model_dir / "model.keras") as archive:
        saved = json.loads(archive.read("config.json"))["compile_config"]
    assert saved["loss"]["registered_name"] == "my_objects>ScaledMSE"
    assert [m["registered_name"] for m in saved["metrics"] if isinstance(m, dict)][-1] == "my_objects>WithinTenth"
    (metrics_dir,) = (work / "reports").glob("sine-mlp-eval-*")
    report = json.loads((metrics_dir / "metrics.json").read_text())
    assert report["chosen_metrics"] == ["within_tenth"]
    # The stateful metric over the whole split: what the last evaluation measured on the same examples.
    assert report["validation"]["within_tenth"] == pytest.approx(last["within_tenth"], rel=1e-4)
    assert 0 < report["train"]["within_tenth"] < 1

    # An edit of the class (its default scale): training and evaluation rerun, and the loss follows it.
    (work / "my_objects.py").write_text(MY_OBJECTS.replace("scale=2.0", "scale=3.0"))
    code, log = _luigi(work, *CLASSES, *short, task="EvaluateEstimator")
    assert code == 0, log[-3000:]
    assert ran_in_summary(log) == {"TrainEstimator", "EvaluateEstimator"}
    (edited,) = [p for p in (work / "models").glob("sine-mlp-*") if p != model_dir]
    last = json.loads((edited / "history.json").read_text())[-1]["eval"]
    assert last["loss"] == pytest.approx(3 * last["mse"], rel=1e-4)


RAISING = """\
import keras


class Stop(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("validation data looks wrong")


def make():
    return [Stop()]
"""


def test_a_callback_that_raises_stops_the_training_with_its_message_and_exit_code_30(work: Path) -> None:
    (work / "my_callbacks.py").write_text(RAISING)
    code, log = _luigi(work, "--TrainEstimator-callbacks", "my_callbacks:make", task="TrainEstimator")
    assert code == 30, log[-3000:]
    assert "--TrainEstimator-callbacks my_callbacks:make raised RuntimeError: validation data looks wrong" in log
    assert "Traceback" not in log
    (staging,) = (work / "models").glob("sine-mlp-*.partial")
    # The pipeline's own callback ran first: the interval's checkpoint was saved before the user's raised.
    state = (staging / "checkpoints" / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-200"' in state
    assert not [p for p in (work / "models").iterdir() if not p.name.endswith(".partial")]


KILLING = (
    MY_CALLBACKS
    + """\


class KillAt(keras.callbacks.Callback):
    # For the test: the training process kills itself (SIGKILL) once a checkpoint of this step exists.
    def on_epoch_end(self, epoch, logs=None):
        import os, signal

        if int(self.model.optimizer.iterations.numpy()) == int(os.environ.get("KILL_AT_STEP", -1)):
            os.kill(os.getpid(), signal.SIGKILL)


def make_killing(max_steps):
    return [*make(max_steps), KillAt()]
"""
)


def _weights(model_dir: Path) -> list[np.ndarray]:
    import keras

    # Not compiled: the weights need none of the user's modules, which are not on this process's path.
    model = keras.saving.load_model(model_dir / "model.keras", compile=False, safe_mode=True)
    return [np.asarray(w) for w in model.get_weights()]


def test_a_training_killed_and_resumed_ends_with_the_weights_of_an_unbroken_run(tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import VENV_BIN

    runs = {}
    for name in ("killed", "unbroken"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "my_losses.py").write_text(MY_LOSSES)
        (folder / "my_callbacks.py").write_text(KILLING)
        (folder / "luigi.cfg").write_text(
            f"{ROOT_HERE}[TrainEstimator]\nbatch_size = 64\nmax_steps = 400\ncheckpoint_steps = 100\n"
            "steps_per_execution = 50\n"
        )
        runs[name] = folder
    args = [str(VENV_BIN / "luigi"), "--module", "pipeline", "TrainEstimator", "--local-scheduler", *CHOICES]
    args[args.index("my_callbacks:make")] = "my_callbacks:make_killing"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    killed = subprocess.run(args, cwd=runs["killed"], env={**env, "KILL_AT_STEP": "200"}, capture_output=True)
    assert killed.returncode == -9, killed.stderr[-3000:].decode()
    (staging,) = (runs["killed"] / "models").glob("*.partial")
    assert 'model_checkpoint_path: "ckpt-200"' in (staging / "checkpoints" / "checkpoint").read_text()
    resumed = subprocess.run(args, cwd=runs["killed"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    unbroken = subprocess.run(args, cwd=runs["unbroken"], env=env, capture_output=True, text=True)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    (model_dir,) = [p for p in (runs["killed"] / "models").iterdir() if p.is_dir()]
    (reference,) = [p for p in (runs["unbroken"] / "models").iterdir() if p.is_dir()]
    assert model_dir.name == reference.name  # the same identity
    marker = json.loads((model_dir / "_SUCCESS.json").read_text())
    assert marker["info"]["resumed_from_step"] == 200
    history = json.loads((model_dir / "history.json").read_text())
    assert [h["step"] for h in history] == [100, 200, 300, 400]
    assert history == json.loads((reference / "history.json").read_text())
    for resumed_weights, unbroken_weights in zip(_weights(model_dir), _weights(reference), strict=True):
        np.testing.assert_array_equal(resumed_weights, unbroken_weights)


BAD = """\
from keras import ops


def broadcast(y_true, y_pred):
    # labels [batch, 1] against predictions flattened to [batch]: [batch, batch] values
    return ops.square(y_true - ops.reshape(y_pred, (-1,)))


def raising(y_true, y_pred):
    raise ValueError("not today")
"""

BAD_CHOICES = {
    "a loss of the wrong shape": (
        ["--TrainEstimator-loss", "bad:broadcast"],
        "--TrainEstimator-loss bad:broadcast: returns values of shape (4, 4) for a batch of 4 (labels (4, 1), "
        "predictions (4, 1)); it must return one value per example, shape (4,)",
    ),
    "a metric that raises": (
        ["--TrainEstimator-metrics", '["bad:raising"]'],
        "--TrainEstimator-metrics bad:raising fails on the regression's labels and predictions: ValueError: not today",
    ),
    "an optimizer argument it does not take": (
        ["--TrainEstimator-optimizer", "sgd", "--TrainEstimator-optimizer-params", '{"weight_decay": 0.1, "betas": 2}'],
        '--TrainEstimator-optimizer-params {"betas": 2, "weight_decay": 0.1}:',
    ),
    "callbacks that are not callbacks": (
        ["--TrainEstimator-callbacks", "bad:broadcast"],
        "--TrainEstimator-callbacks bad:broadcast",
    ),
    "no such function": (["--TrainEstimator-loss", "bad:nothing"], "defines no function 'nothing'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHOICES))
def test_a_choice_that_does_not_fit_is_one_line_with_exit_code_40_before_any_work(work: Path, case: str) -> None:
    (work / "bad.py").write_text(BAD)
    args, message = BAD_CHOICES[case]
    code, log = _luigi(work, *args)
    assert code == 40, log[-3000:]
    assert message in log
    assert "Traceback" not in log
    assert not (work / "data").exists() and not (work / "models").exists()


COMPILED = """\
import keras


def build_compiled(input_shape, num_outputs, problem):
    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(32, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(num_outputs)(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="huber", metrics=["mse", "mape"])
    return model


@keras.saving.register_keras_serializable(package="my_models")
class Stepped(keras.Model):
    # Its own train_step (Keras' "customizing what happens in fit"): the loss of compile, with gradients clipped.
    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply([tf.clip_by_norm(g, 1.0) for g in gradients], self.trainable_variables)
        return self.compute_metrics(x, y, y_pred)


def build_stepped(input_shape, num_outputs, problem):
    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(32, activation="tanh")(inputs)
    return Stepped(inputs, keras.layers.Dense(num_outputs)(hidden))
"""


def test_a_network_that_compiles_itself_keeps_its_optimizer_loss_and_metrics(work: Path) -> None:
    (work / "my_models.py").write_text(COMPILED)
    network = ["--TrainEstimator-network", "my_models:build_compiled"]
    code, log = _luigi(work, *network)
    assert code == 0, log[-3000:]
    (model_dir,) = (work / "models").glob("sine-build_compiled-*")
    config = json.loads((model_dir / "train_config.json").read_text())["config"]
    assert config["network_compiles"] is True
    assert config["loss"] == "huber" and config["metrics"] == ["mse", "mape"]
    assert config["optimizer"]["class_name"] == "SGD" and config["optimizer"]["momentum"] == pytest.approx(0.9)
    history = json.loads((model_dir / "history.json").read_text())
    assert set(history[-1]["eval"]) == {"loss", "mse", "mape"}  # its metrics, not the problem's three
    (metrics_dir,) = (work / "reports").glob("sine-build_compiled-eval-*")
    report = json.loads((metrics_dir / "metrics.json").read_text())
    assert report["chosen_metrics"] == ["mape"] and report["validation"]["mape"] > 0  # mse is the problem's too
    # Its choices are part of the resolved configuration that status (and runs, and the web UI) shows.
    (work / "my_models.py").write_text(COMPILED.replace('loss="huber"', 'loss="mae"'))
    status = run_cli(["python", "-m", "pipeline", "status", "TrainEstimator", *network], cwd=work).stdout
    assert 'parameter loss changed from "huber" to "mae"' in status, status
    (work / "my_models.py").write_text(COMPILED)
    # Choosing a loss as well would be ignored: refused.
    code, log = _luigi(work, *network, "--TrainEstimator-loss", "mae")
    assert code == 40 and "compiles the model itself" in log, log[-3000:]


def test_a_subclassed_model_with_its_own_train_step_checkpoints_resumes_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    from pipeline.etl import shards, sources
    from pipeline.evaluation import evaluate
    from pipeline.training import estimator
    from tests.test_estimator import small_config

    (tmp_path / "my_models.py").write_text(COMPILED)
    monkeypatch.chdir(tmp_path)  # where the user's module is
    shards.create_shards(tmp_path / "shards", sources.SineSource(), {"train": 3, "validation": 2})
    stepped = {"network": "my_models:build_stepped", "network_args": {}, "lr_decay": False}
    resumed, unbroken = tmp_path / "resumed", tmp_path / "unbroken"
    estimator.train(small_config(**stepped, max_steps=200), tmp_path / "shards", resumed)
    result = estimator.train(small_config(**stepped, max_steps=300), tmp_path / "shards", resumed)
    assert result["resumed_from_step"] == 200  # its own train_step advanced the global step
    estimator.train(small_config(**stepped, max_steps=300), tmp_path / "shards", unbroken)
    history = json.loads((resumed / "history.json").read_text())
    assert [h["step"] for h in history] == [100, 200, 300] and history[-1]["eval"]["loss"] < history[0]["eval"]["loss"]
    model = evaluate.load_model(resumed)  # model.keras in safe mode: the registered subclass
    assert type(model).__name__ == "Stepped"
    for a, b in zip(model.get_weights(), evaluate.load_model(unbroken).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    served = tf.saved_model.load(str(resumed / "saved_model"))
    x = np.linspace(-10, 10, 7, dtype=np.float32)[:, None]
    predicted = served.signatures["raw"](x=tf.constant(x[:, 0]))["predictions"].numpy()  # signatures.py
    np.testing.assert_allclose(predicted, model.predict(x, verbose=0)[:, 0], rtol=1e-5)


def test_the_docs_show_these_examples() -> None:
    project = Path(__file__).resolve().parent.parent
    docs = (project / "docs" / "your-experiment.md").read_text()
    assert f"```python\n{MY_LOSSES}```" in docs and f"```python\n{MY_CALLBACKS}```" in docs
    assert "your model_fn (loss, metrics, optimizer, callbacks)" in (project / "README.md").read_text()
