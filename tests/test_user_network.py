"""A network of the user's own: `--TrainEstimator-network my_models:build_tiny` (pipeline/builders.py).

Everything runs through the real `luigi` command in a folder holding the
user's module, as a user would: the docs' example trains, evaluates,
exports and plots; edits of the function (and of a module it imports) rerun
training, comment-only edits nothing; every mistake is one line with exit code 40.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR, ROOT_HERE, SMALL_TRAINING, UP_TO_DATE_RUN_IMPORTS, run_cli
from tests.test_rerun import ran_in_summary

ALL = {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"}

# docs/your-experiment.md's example, word for word (test_the_docs_show_this_example checks they agree).
MY_MODELS = """\
import keras


def build_tiny(input_shape, num_outputs, problem, width=32):
    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(width, activation="tanh")(inputs)
    hidden = keras.layers.Dense(width, activation="tanh")(hidden)
    activation = "softmax" if problem == "classification" else None
    outputs = keras.layers.Dense(num_outputs, activation=activation)(hidden)
    return keras.Model(inputs, outputs)
"""

USER_NETWORK = ["--TrainEstimator-network", "my_models:build_tiny", "--TrainEstimator-network-params", '{"width": 64}']


def _luigi(work: Path, *args: str) -> tuple[int, str]:
    out = run_cli(["luigi", "--module", "pipeline", "PlotInference", "--local-scheduler", *args], cwd=work)
    return out.returncode, out.stderr


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A user's folder: their module, and a luigi.cfg with a short training."""
    (tmp_path / "my_models.py").write_text(MY_MODELS)
    small = "\n".join(f"{k} = {v}" for k, v in SMALL_TRAINING.items() if k != "max_steps")
    (tmp_path / "luigi.cfg").write_text(f"{ROOT_HERE}[TrainEstimator]\n{small}\nmax_steps = 600\n")
    return tmp_path


def test_a_users_network_trains_evaluates_exports_and_plots_like_a_built_in_one(work: Path) -> None:
    code, log = _luigi(work, *USER_NETWORK)
    assert code == 0, log[-3000:]
    assert ran_in_summary(log) == ALL
    (model_dir,) = (work / "models").glob("sine-build_tiny-*")
    assert (model_dir / "model.keras").is_file() and (model_dir / "saved_model" / "saved_model.pb").is_file()
    config = json.loads((model_dir / "train_config.json").read_text())["config"]
    assert config["network"] == "my_models:build_tiny" and config["network_args"] == {"width": 64}
    marker = json.loads((model_dir / "_SUCCESS.json").read_text())
    assert marker["params"]["network_args"] == {"width": 64}
    assert "my_models.py" in marker["code"]  # the user's source is part of the identity
    (metrics_dir,) = (work / "reports").glob("sine-build_tiny-eval-*")
    validation = json.loads((metrics_dir / "metrics.json").read_text())["validation"]
    assert validation["num_examples"] == 341 and validation["mse"] < 0.4  # learnt: predicting the mean scores 0.51
    (plots_dir,) = (work / "reports").glob("sine-build_tiny-plots-*")
    assert {p.name for p in plots_dir.glob("*.png")} == {
        "predictions.png",
        "predicted_vs_true.png",
        "training_curves.png",
    }

    # A comment, a docstring or formatting: nothing reruns.
    source = MY_MODELS.replace(
        "    inputs = keras.Input", '    """My network."""\n    # one input\n    inputs = keras.Input'
    )
    (work / "my_models.py").write_text(source)
    code, log = _luigi(work, *USER_NETWORK)
    assert code == 0 and "Did not run any tasks" in log, log[-3000:]

    # The function itself: training and the stages below it.
    (work / "my_models.py").write_text(source.replace('activation="tanh")(hidden)', 'activation="relu")(hidden)'))
    status = run_cli(["python", "-m", "pipeline", "status", "PlotInference", *USER_NETWORK], cwd=work).stdout
    assert "code in my_models.py changed" in status
    code, log = _luigi(work, *USER_NETWORK)
    assert code == 0, log[-3000:]
    assert ran_in_summary(log) == {"TrainEstimator", "EvaluateEstimator", "PlotInference"}


def test_a_module_the_users_network_imports_is_part_of_its_identity(work: Path) -> None:
    (work / "blocks.py").write_text(
        "import keras\n\n\ndef hidden(x, width):\n    return keras.layers.Dense(width)(x)\n"
    )
    (work / "my_models.py").write_text(
        MY_MODELS.replace("import keras\n", "import keras\n\nfrom blocks import hidden as extra\n", 1).replace(
            "    activation = ", "    hidden = extra(hidden, width)\n    activation = "
        )
    )
    code, log = _luigi(work, *USER_NETWORK)
    assert code == 0, log[-3000:]
    marker = json.loads(next((work / "models").glob("sine-build_tiny-*/_SUCCESS.json")).read_text())
    assert {"my_models.py", "blocks.py"} <= set(marker["code"])
    (work / "blocks.py").write_text(
        "import keras\n\n\ndef hidden(x, width):\n    return keras.layers.Dense(width, activation='relu')(x)\n"
    )
    code, log = _luigi(work, *USER_NETWORK)
    assert code == 0, log[-3000:]
    assert ran_in_summary(log) == {"TrainEstimator", "EvaluateEstimator", "PlotInference"}


def test_an_up_to_date_run_with_a_users_network_imports_no_tensorflow(work: Path) -> None:
    cfg = (work / "luigi.cfg").read_text() + "network = my_models:build_tiny\n"
    (work / "luigi.cfg").write_text(cfg)
    check = "import sys, pipeline; print([m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules])"
    assert run_cli(["python", "-c", check], cwd=work).stdout.strip() == "[]"
    code, log = _luigi(work)
    assert code == 0, log[-3000:]
    out = run_cli(["python", "-c", UP_TO_DATE_RUN_IMPORTS], cwd=work)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stderr[-2000:]
    assert "Did not run any tasks" in out.stderr


BAD_NETWORKS = {
    "no such module": (
        ["--TrainEstimator-network", "nowhere:build"],
        "no module 'nowhere' in the folders searched: {work} (the working directory)",
    ),
    "no such function": (["--TrainEstimator-network", "my_models:build_huge"], "defines no function 'build_huge'"),
    "not a keras.Model": (["--TrainEstimator-network", "my_models:not_a_model"], "returned a Dense, not a keras.Model"),
    "wrong output shape": (
        ["--TrainEstimator-network", "my_models:two_outputs"],
        "does not fit the regression: its output has shape (2,) per example, the regression needs (1,)",
    ),
    "parameters it does not take": (
        ["--TrainEstimator-network", "my_models:build_tiny", "--TrainEstimator-network-params", '{"depth": 3}'],
        "--TrainEstimator-network-params: build_tiny() takes no argument 'depth' (it takes: width)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_NETWORKS))
def test_each_mistake_is_one_line_with_exit_code_40_before_any_work(work: Path, case: str) -> None:
    (work / "my_models.py").write_text(
        MY_MODELS
        + textwrap.dedent("""

            def not_a_model(input_shape, num_outputs, problem):
                return keras.layers.Dense(num_outputs)


            def two_outputs(input_shape, num_outputs, problem):
                inputs = keras.Input(shape=input_shape)
                return keras.Model(inputs, keras.layers.Dense(2)(inputs))
        """)
    )
    args, message = BAD_NETWORKS[case]
    message = message.format(work=work)
    code, log = _luigi(work, *args)
    assert code == 40, log[-3000:]
    assert message in log
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert len([line for line in lines if "--TrainEstimator-network" in line]) == 1
    assert not (work / "data").exists() and not (work / "models").exists()  # nothing written, not even shards


def test_the_readme_shows_this_example() -> None:
    """The README's tour (indented in its list) and docs/your-experiment.md show the network tested here."""
    project = Path(__file__).resolve().parent.parent
    readme, page = (project / "README.md").read_text(), (project / "docs" / "your-experiment.md").read_text()
    assert f"```python\n{MY_MODELS}```" in page
    indented = textwrap.indent(MY_MODELS, "   ")
    assert f"   ```python\n{indented}   ```" in readme


def test_a_module_in_the_project_folder_itself_is_found(tmp_path: Path) -> None:
    """The README's command run where the project is (its luigi.cfg), the module beside it."""
    module = PROJECT_DIR / f"my_models_{os.getpid()}.py"
    module.write_text(MY_MODELS)
    short = ["--TrainEstimator-max-steps", "100", "--TrainEstimator-checkpoint-steps", "100"]
    try:
        args = ["luigi", "--module", "pipeline", "TrainEstimator", "--local-scheduler", "--paths-root", str(tmp_path)]
        out = run_cli([*args, "--TrainEstimator-network", f"{module.stem}:build_tiny", *short], cwd=PROJECT_DIR)
    finally:
        module.unlink()
    assert out.returncode == 0, out.stderr[-3000:]
    (model_dir,) = (tmp_path / "models").glob("sine-build_tiny-*")
    assert f"{module.stem}.py" in json.loads((model_dir / "_SUCCESS.json").read_text())["code"]


def test_a_missing_module_names_every_folder_searched(work: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    out = run_cli(
        ["luigi", "--module", "pipeline", "PlotInference", "--local-scheduler", "--TrainEstimator-network", "no:f"],
        cwd=work,
        env={"PYTHONPATH": f"{elsewhere}{os.pathsep}{work}"},
    )
    assert out.returncode == 40, out.stderr[-3000:]
    assert (
        f"no module 'no' in the folders searched: {work} (the working directory), {elsewhere} (PYTHONPATH). "
        "Put no.py in one of them (or add its folder to PYTHONPATH)."
    ) in out.stderr
