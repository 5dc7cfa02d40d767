"""Choosing the optimizer, loss, metrics and callbacks by name (pipeline/training/compiling.py), before any work.

Keras' names are listed in the module (the scheduling path imports no Keras):
these tests compare the lists with the installed Keras, and run the real
`luigi` command for every mistake a user can make with them: one line, exit
code 40, nothing written.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from pipeline.training import compiling
from tests.conftest import ROOT_HERE, SMALL_TRAINING, run_cli


def _keras_names(module: types.ModuleType, skip: set[str]) -> set[str]:
    import keras

    names = set()
    for name in getattr(module, "ALL_OBJECTS_DICT"):  # noqa: B009 (Keras' own registry of names)
        if not name.islower() or name in skip:
            continue
        try:
            getattr(keras, module.__name__.split(".")[-1]).get(name)
        except (TypeError, ValueError):  # needs arguments (io_u, precision_at_recall, ...)
            continue
        names.add(name)
    return names


def test_the_lists_are_the_installed_keras_names() -> None:
    from keras.src import losses, metrics, optimizers

    assert set(compiling.OPTIMIZERS) == _keras_names(
        optimizers, {"optimizer", "optimizermap", "multioptimizer", "lossscaleoptimizer"}
    )
    assert set(compiling.LOSSES) == _keras_names(losses, set())
    assert set(compiling.METRICS) == _keras_names(metrics, {"metric", "mean_metric_wrapper", "mean", "sum"})


@pytest.fixture
def work(tmp_path: Path) -> Path:
    small = "\n".join(f"{k} = {v}" for k, v in SMALL_TRAINING.items())
    (tmp_path / "luigi.cfg").write_text(f"{ROOT_HERE}[TrainEstimator]\n{small}\n")
    return tmp_path


FLAG = "--TrainEstimator-"
MISTAKES = {
    "optimizer": (
        [FLAG + "optimizer", "adamww"],
        f"{FLAG}optimizer adamww: not a Keras optimizer (did you mean adamw?)",
    ),
    "loss": ([FLAG + "loss", "hubber"], f"{FLAG}loss hubber: not a Keras loss (did you mean huber?)"),
    "metric": (
        [FLAG + "metrics", '["mape", "r2score"]'],
        f"{FLAG}metrics r2score: not a Keras metric (did you mean r2_score?)",
    ),
    "optimizer params": (
        [FLAG + "optimizer-params", '{"learning_rate": 0.1}'],
        f"{FLAG}optimizer-params sets 'learning_rate', which the pipeline sets itself (use {FLAG}learning-rate)",
    ),
    "callbacks": ([FLAG + "callbacks", "nowhere:make"], f"{FLAG}callbacks nowhere:make: no module 'nowhere'"),
    "callbacks not module:function": ([FLAG + "callbacks", "make"], f"{FLAG}callbacks must be module:function"),
    "warm-up": (
        [FLAG + "warmup-steps", "200"],
        f"{FLAG}warmup-steps must be 0 or more and less than the 200 training steps. Received: 200",
    ),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_an_unknown_name_is_one_line_with_a_suggestion_and_exit_code_40_before_any_work(work: Path, case: str) -> None:
    args, message = MISTAKES[case]
    out = run_cli(["luigi", "--module", "pipeline", "PlotInference", "--local-scheduler", *args], cwd=work)
    assert out.returncode == 40, out.stderr[-3000:]
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (work / "data").exists() and not (work / "models").exists()


def test_the_learning_rate_warms_up_then_decays_or_stays() -> None:
    from types import SimpleNamespace

    run = {"learning_rate": 0.01, "max_steps": 1000}
    decayed = compiling.learning_rate(SimpleNamespace(**run, lr_decay=True, warmup_steps=100))
    constant = compiling.learning_rate(SimpleNamespace(**run, lr_decay=False, warmup_steps=100))
    assert [float(decayed(step)) for step in (0, 50, 100)] == pytest.approx([0.0, 0.005, 0.01])
    assert float(decayed(550)) == pytest.approx(0.005) and float(decayed(1000)) == pytest.approx(0.0, abs=1e-9)
    assert [float(constant(step)) for step in (50, 100, 550, 1000)] == pytest.approx([0.005, 0.01, 0.01, 0.01])
    # Without a warm-up: the cosine decay from the start, as before; or the rate itself.
    assert float(compiling.learning_rate(SimpleNamespace(**run, lr_decay=True, warmup_steps=0))(500)) == (
        pytest.approx(0.005)
    )
    assert compiling.learning_rate(SimpleNamespace(**run, lr_decay=False, warmup_steps=0)) == 0.01
