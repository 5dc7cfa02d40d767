"""`python -m pipeline search`: Optuna over the DAG (pipeline/experiments/search.py, study.py, trials.py, space.py,
pipeline/training/pruning.py), with real trainings of a tiny sine, a real journal file and a real luigid."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.core import markers
from pipeline.errors import ParameterError
from pipeline.experiments import space
from pipeline.runtime import gpu_slots
from pipeline.tasks import TrainEstimator
from pipeline.training import pruning
from tests.conftest import VENV_BIN, make_root, run_cli
from tests.scheduler import running_luigid, write_run_config

# Tiny trainings: 300 steps, an evaluation (and a checkpoint) every 100.
TINY = {"max_steps": "300", "checkpoint_steps": "100", "batch_size": "64", "steps_per_execution": "50"}
GOOD, BAD = "0.03", "0.0001"  # learning rates: the sine fits with the first, hardly moves with the second
# RandomSampler(seed=0) on choice(0.0001, 0.03) asks 0.03, 0.0001, 0.03, 0.03 (checked below).
SEARCH = [
    "search", "EvaluateEstimator", "--TrainEstimator-learning-rate", f"choice({BAD}, {GOOD})",
    "--sampler", "random", "--seed", "0", "--pruner", "median(n_startup_trials=1)", "--local-scheduler",
]  # fmt: skip


def _learning_rate(dimension: space.Dimension, sampled: str) -> float:
    value = dimension.value(sampled)
    assert isinstance(value, float)
    return value


def test_distributions_parse_as_the_parameter_parses_its_values(workspace: Path) -> None:
    params = dict(TrainEstimator.get_params())
    rate = space.parse("TrainEstimator", "learning_rate", "--f", params["learning_rate"], "loguniform(1e-4, 1e-1)")
    assert (rate.kind, rate.low, rate.high) == ("loguniform", 1e-4, 1e-1)
    assert rate.distribution().log and rate.spelling() == "loguniform(0.0001, 0.1)"
    assert _learning_rate(rate, "0.003") == 0.003 and rate.holds(0.5) is None and rate.holds(0.01) == 0.01
    units = space.parse("TrainEstimator", "hidden_units", "--f", params["hidden_units"], "choice([64], [100, 100])")
    assert units.choices == ("[64]", "[100, 100]") and units.value("[100, 100]") == [100, 100]
    assert units.holds((100, 100)) == "[100, 100]" and units.holds([7]) is None
    steps = space.parse("TrainEstimator", "max_steps", "--f", params["max_steps"], "int(100, 1000, 100)")
    assert steps.distribution().step == 100 and steps.value(300) == 300 and steps.holds(250) is None
    assert not space.is_distribution("[64]") and space.is_distribution("uniform(0, 1)")


@pytest.mark.parametrize(
    ("flag", "text", "message"),
    [
        ("learning_rate", "lognormal(1, 2)", "unknown distribution lognormal. Expected uniform(low, high)"),
        ("learning_rate", "uniform(0.1, 0.01)", "the range of uniform(0.1, 0.01) is inverted or empty"),
        ("learning_rate", "loguniform(0, 1)", "loguniform needs 0 < low"),
        ("max_steps", "uniform(10, 20)", "takes whole numbers: search it with int(low, high)"),
        ("hidden_units", "choice([64])", "choice needs at least two values"),
        ("hidden_units", "choice([64], sixty)", "value 'sixty' is not accepted"),
    ],
)
def test_a_bad_distribution_names_the_flag(workspace: Path, flag: str, text: str, message: str) -> None:
    param = dict(TrainEstimator.get_params())[flag]
    with pytest.raises(ParameterError, match=re.escape(message)):
        space.parse("TrainEstimator", flag, "--TrainEstimator-x", param, text)


def test_pruners_by_name_with_optunas_arguments() -> None:
    assert pruning.parse_pruner("median(n_startup_trials=2, n_warmup_steps=100)") == (
        "median",
        {"n_startup_trials": 2, "n_warmup_steps": 100},
    )
    assert type(pruning.make_pruner(*pruning.parse_pruner("none"))).__name__ == "NopPruner"
    for text, message in (("medium", "unknown --pruner medium"), ("median(bogus=1)", "is not accepted")):
        with pytest.raises(ParameterError, match=re.escape(message)):
            pruning.parse_pruner(text)
    # What a trial is told of one evaluation: the objective's own metric, else the loss in its direction.
    assert pruning.intermediate_value({"loss": 0.5, "mse": 0.4}, "mse", maximise=False) == 0.4
    assert pruning.intermediate_value({"loss": 0.5}, "macro_f1", maximise=True) == -0.5
    assert pruning.intermediate_value({"loss": float("nan")}, "rmse", maximise=False) is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--TrainEstimator-learning-rate", "lognormal(1, 2)"], "unknown distribution lognormal"),
        (["--TrainEstimator-learning-rate", "loguniform(0.1, 0.001)"], "is inverted or empty"),
        (["--TrainEstimator-hidden-units", "choice([64], [0])"], "hidden-units must be a list of positive integers"),
        (
            ["--TrainEstimator-learning-rat", "loguniform(1e-4, 1e-1)"],
            "Unknown parameter --TrainEstimator-learning-rat (did you mean --TrainEstimator-learning-rate?)",
        ),
        (
            ["--TrainEstimator-learning-rate", "loguniform(1e-4, 1e-1)", "--objective", "validation.accuracy"],
            "is not a metric of the evaluation of this regression: its metrics are validation.mse, "
            "validation.rmse, validation.mae",
        ),
    ],
)
def test_bad_input_is_one_line_with_exit_code_40_before_anything_runs(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    make_root(tmp_path)
    out = run_cli(["python", "-m", "pipeline", "search", "PlotInference", *arguments], cwd=tmp_path)
    assert out.returncode == 40, out.stderr[-2000:]
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists() and not (tmp_path / "searches").exists()


def _trials(stdout: str) -> dict[int, list[str]]:
    """The trial table the command prints: trial number -> its cells (state, objective, values, run)."""
    lines = stdout.split("\n\n")[0].splitlines()
    assert lines[0].split()[:3] == ["trial", "state", "mse"], stdout
    return {int(cells[0]): cells[1:] for cells in (line.split() for line in lines[1:])}


def test_a_search_reuses_what_was_trained_prunes_resumes_and_adds_trials(tmp_path: Path) -> None:
    """Points 1, 2, 3 and 5 with a random sampler of a known order (RandomSampler(seed=0)): trial 0 is a
    configuration trained by hand (reused), trial 1 is pruned at its first evaluation, trial 2 is reused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    order = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    choice: dict[str, optuna.distributions.BaseDistribution] = {
        "x": optuna.distributions.CategoricalDistribution([BAD, GOOD])
    }
    assert [order.ask(choice).params["x"] for _ in range(4)] == [GOOD, BAD, GOOD, GOOD]
    work = tmp_path / "work"
    work.mkdir()
    write_run_config(work, TINY)
    # One GPU slot (this host has none, the slot is its lock): each training runs in a child holding it.
    with open(work / "luigi.cfg", "a") as cfg:
        cfg.write(f"\n[gpu_slots]\ngpus = 1\nlock_dir = {tmp_path / 'slots'}\n")
    by_hand = run_cli(
        [
            "luigi",
            "--module",
            "pipeline",
            "EvaluateEstimator",
            "--local-scheduler",
            f"--TrainEstimator-learning-rate={GOOD}",
        ],
        cwd=work,
    )
    assert by_hand.returncode == 0, by_hand.stderr[-3000:]
    (hand_model,) = (work / "models").iterdir()
    hand_marker = markers.read_marker(hand_model)
    (evaluation,) = (work / "reports").glob("sine-mlp-eval-*")
    hand_mse = markers.read_marker(evaluation)["info"]["validation"]["mse"]  # type: ignore[index]
    assert hand_marker is not None

    first = run_cli(["python", "-m", "pipeline", *SEARCH, "--trials", "3"], cwd=work)
    assert first.returncode == 0, first.stderr[-3000:]
    trials = _trials(first.stdout)
    assert [trials[n][0] for n in range(3)] == ["reused", "pruned@100", "reused"]
    assert float(trials[0][1]) == pytest.approx(hand_mse, rel=1e-3) and trials[0][3] == hand_model.name
    assert markers.read_marker(hand_model) == hand_marker  # reused, not retrained
    # Shared stages once: one shards folder, made by the run by hand.
    assert len(list((work / "data" / "shards").iterdir())) == 1
    # The pruned training: stopped at its first evaluation, kept unpublished with that checkpoint.
    (staging,) = (work / "models").glob("*.partial")
    assert not (work / "models" / staging.name.removesuffix(".partial")).exists()
    assert (staging / "checkpoints" / "ckpt-100.index").is_file() and not (
        staging / "checkpoints" / "ckpt-200.index"
    ).exists()
    history = json.loads((staging / "history.json").read_text())
    assert [h["step"] for h in history] == [100]
    assert "pruned at step 100" in first.stderr
    assert gpu_slots.holders(["0"], tmp_path / "slots") == {"0": None}  # the pruned training let its slot go
    # The study in its journal under the root, and the command's end: the report and the best trial's folders.
    journal = Path(re.search(r"^Study \S+: (.+)$", first.stdout, re.MULTILINE)[1])  # type: ignore[index]
    assert journal.is_file() and journal.is_relative_to(work / "searches")
    study = optuna.load_study(
        study_name=journal.parent.name,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))),
    )
    states = [(t.number, t.state.name, t.user_attrs.get("outcome")) for t in study.trials]
    assert states == [(0, "COMPLETE", "reused"), (1, "PRUNED", "pruned"), (2, "COMPLETE", "reused")]
    assert study.trials[0].value == pytest.approx(hand_mse) and study.trials[0].intermediate_values
    assert study.trials[1].intermediate_values[100] > study.trials[0].intermediate_values[100]
    report = Path(re.search(r"^Report: (.+)$", first.stdout, re.MULTILINE)[1])  # type: ignore[index]
    page = report.read_text()
    assert "<h2>Optimisation history</h2>" in page and 'alt="Optimisation history"' in page
    assert "<h2>Parameter importances</h2>" in page and 'alt="Parameter importances"' in page
    tail = first.stdout.strip().splitlines()[-3:]  # the best trial's folders, CreateShards to EvaluateEstimator
    assert tail[0].split()[0] == "CreateShards" and Path(tail[1].split()[1]) == hand_model
    assert all(Path(line.split()[1]).is_dir() for line in tail)

    # The same search again runs nothing; --trials 4 adds one trial (a reused one: RandomSampler restarts).
    again = run_cli(["python", "-m", "pipeline", *SEARCH, "--trials", "3"], cwd=work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "running" not in again.stderr and _trials(again.stdout) == trials
    more = run_cli(["python", "-m", "pipeline", *SEARCH, "--trials", "4"], cwd=work)
    assert more.returncode == 0, more.stderr[-3000:]
    assert sorted(_trials(more.stdout)) == [0, 1, 2, 3] and "trial 3:" in more.stderr

    # Training the pruned configuration later resumes from its checkpoints.
    resumed = run_cli(
        ["luigi", "--module", "pipeline", "TrainEstimator", "--local-scheduler", "--TrainEstimator-learning-rate", BAD],
        cwd=work,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    marker = markers.read_marker(work / "models" / staging.name.removesuffix(".partial"))
    assert marker is not None and marker["info"]["resumed_from_step"] == 100

    # Point 5: the runs table has the trial, its state and the objective of a search's runs; --search NAME
    # keeps that study's runs, in the table, --json and --csv.
    name = journal.parent.name
    table = run_cli(["python", "-m", "pipeline", "runs"], cwd=work)
    assert table.returncode == 0, table.stderr[-2000:]
    header, *lines = [line.split() for line in table.stdout.splitlines()[1:]]
    assert header[:5] == ["run", "trial", "state", "objective", "learning_rate"]
    cells = {line[0]: line[1:4] for line in lines}
    assert cells == {hand_model.name: ["0", "reused", f"{hand_mse:.4g}"], staging.name[:-8]: ["-", "-", "-"]}
    chosen = run_cli(["python", "-m", "pipeline", "runs", "--search", name, "--json"], cwd=work)
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    (record,) = json.loads(chosen.stdout)
    assert (record["run"], record["search"], record["trial"], record["state"]) == (hand_model.name, name, 0, "reused")
    assert record["objective"] == pytest.approx(hand_mse) and record["objective_metric"] == "validation.mse"
    rows = list(
        csv.DictReader(
            io.StringIO(run_cli(["python", "-m", "pipeline", "runs", "--search", name, "--csv"], cwd=work).stdout)
        )
    )
    assert [(r["run"], r["trial"], r["state"]) for r in rows] == [(hand_model.name, "0", "reused")]
    assert float(rows[0]["objective"]) == pytest.approx(hand_mse)
    wrong = run_cli(["python", "-m", "pipeline", "runs", "--search", "sine-mlp-search-nothing"], cwd=work)
    assert wrong.returncode == 40 and f"the studies there: {name}" in wrong.stderr, wrong.stderr[-2000:]


def test_trials_run_at_once_against_luigid_and_show_there_with_their_values(tmp_path: Path) -> None:
    """Point 4: --workers 2 with a gpu pool of 2: two trainings at once, each in the web UI's task list."""
    work = tmp_path / "work"
    work.mkdir()
    write_run_config(work, TINY)
    with running_luigid(tmp_path / "luigid", resources={"gpu": 2}) as scheduler:
        command = [
            "python", "-m", "pipeline", "search", "EvaluateEstimator",
            "--TrainEstimator-learning-rate", "loguniform(0.003, 0.03)", "--trials", "4", "--workers", "2",
            "--sampler", "random", "--pruner", "none", *scheduler.cli(),
        ]  # fmt: skip
        out = run_cli(command, cwd=work)
        assert out.returncode == 0, out.stderr[-3000:]
        trials = _trials(out.stdout)
        assert [cells[0] for cells in trials.values()] == ["complete"] * 4
        done = scheduler.by_family("DONE")
        assert len(done["CreateShards"]) == 1  # made once for the four trials
        shown = {
            int(task["params"]["trial"].rsplit("/", 1)[1]): f"{float(task['params']['learning_rate']):.4g}"
            for task in done["TrainEstimator"]
        }
        assert shown == {number: cells[2] for number, cells in trials.items()}
    spans = []
    for folder in (work / "models").iterdir():
        info = markers.read_marker(folder)["info"]  # type: ignore[index]
        spans.append((info["started_at"], info["finished_at"]))
    spans.sort()
    assert len(spans) == 4 and any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


# A callback of the user's (--TrainEstimator-callbacks) that holds the training after each evaluation's
# checkpoint (the pipeline's callback runs first) while the file HOLD_FILE names exists: a search is killed
# there, at a known step, however fast or slow the machine.
HOLD = """\
import os
import time

import keras


class Hold(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        while os.path.exists(os.environ.get("HOLD_FILE", "")):
            time.sleep(0.05)


def make():
    return [Hold()]
"""


def _another_host() -> list[str]:
    """A command prefix that runs it with another host name (its own UTS namespace), or skip the test."""
    for prefix in (["unshare", "--uts"], ["unshare", "--user", "--map-root-user", "--uts"]):
        try:
            named = subprocess.run([*prefix, "sh", "-c", "hostname other-host && hostname"], capture_output=True)
        except FileNotFoundError:
            break
        if named.returncode == 0 and named.stdout.split() == [b"other-host"]:
            return [*prefix, "sh", "-c", 'hostname other-host && exec "$@"', "sh"]
    pytest.skip("unshare cannot give a process another host name here")


def _killed_at(command: list[str], work: Path, log: Path, checkpoint: str, env: dict[str, str]) -> None:
    """Start a search, and SIGKILL it (its process group: the search and its trial process) once the trial's
    training is held at `checkpoint` (ckpt-N.index in the staging folder)."""
    import signal

    with open(log, "wb") as out:
        search = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((work / "models").glob(f"*.partial/checkpoints/{checkpoint}")):
        assert search.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    os.killpg(search.pid, signal.SIGKILL)
    search.wait()


def test_a_search_killed_on_another_host_or_here_goes_on_where_it_stopped(tmp_path: Path) -> None:
    """Point 1: a crash loses nothing. A search on another host (another host name: its process cannot be
    checked from here) is killed during trial 0: the trial stays RUNNING in the study until its lease runs
    out, then the next search fails it (interrupted) and asks its values again first (trial 1), resuming
    its training from its checkpoint. That search, killed here during trial 1, is found gone at once (its
    process is not alive), and the next one completes the same values from the later checkpoint (trial 2)."""
    import optuna

    work = tmp_path / "work"
    work.mkdir()
    write_run_config(work, {**TINY, "callbacks": "hold:make"})
    (work / "hold.py").write_text(HOLD)
    command = [
        str(VENV_BIN / "python"), "-m", "pipeline", "search", "EvaluateEstimator", "--TrainEstimator-learning-rate",
        "loguniform(0.003, 0.03)", "--trials", "1", "--sampler", "random", "--pruner", "none", "--local-scheduler",
    ]  # fmt: skip
    hold = tmp_path / "hold"
    hold.touch()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HOLD_FILE=str(hold))
    # Each search with a sampler seeded anew: the values are the same only because they are asked again.
    other = [*_another_host(), *command, "--seed", "1", "--lease", "1"]
    _killed_at(other, work, tmp_path / "other.log", "ckpt-100.index", env)
    (journal,) = (work / "searches").glob("*/study.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (trial,) = optuna.load_study(study_name=journal.parent.name, storage=storage).trials
    assert trial.state == optuna.trial.TrialState.RUNNING and trial.user_attrs["asked_by"]["host"] == "other-host"
    time.sleep(max(0.0, trial.user_attrs["lease_until"] - time.time()) + 0.1)  # the dead search's lease runs out

    _killed_at([*command, "--seed", "2"], work, tmp_path / "here.log", "ckpt-200.index", env)
    here = (tmp_path / "here.log").read_text()
    assert "trial 0 was interrupted (its search on other-host stopped renewing its lease" in here, here[-3000:]
    hold.unlink()
    again = run_cli(["python", *command[1:], "--seed", "3"], cwd=work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial 1 was interrupted (its search stopped)" in again.stderr
    trials = _trials(again.stdout)
    assert [trials[n][0] for n in range(3)] == ["interrupted", "interrupted", "complete"]
    assert trials[0][2] == trials[1][2] == trials[2][2]  # the same values each time
    study = optuna.load_study(study_name=journal.parent.name, storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert [t.user_attrs.get("retry_of") for t in study.trials] == [None, 0, 1]
    (model,) = (work / "models").iterdir()
    marker = markers.read_marker(model)
    assert marker is not None and marker["info"]["resumed_from_step"] == 200
    history = json.loads((model / "history.json").read_text())
    assert [h["step"] for h in history] == [100, 200, 300]


def test_importing_the_pipeline_and_the_search_imports_no_optuna(tmp_path: Path) -> None:
    """Optuna takes a while to import: only a running search (and a training with a trial) imports it."""
    code = (
        "import sys, pipeline, pipeline.__main__, pipeline.cli.search, pipeline.experiments.search\n"
        "print('optuna' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    out = run_cli(["python", "-c", code], cwd=make_root(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_two_searches_sharing_the_root_add_trials_to_one_study(tmp_path: Path) -> None:
    """Point 1: what a second host sharing the artifact root does, as two processes at once: one study, one
    budget for both, each adding trials, the shards made once."""
    import optuna

    work = tmp_path / "work"
    work.mkdir()
    write_run_config(work, TINY)
    command = [
        str(VENV_BIN / "python"), "-m", "pipeline", "search", "EvaluateEstimator", "--TrainEstimator-learning-rate",
        "loguniform(0.003, 0.03)", "--trials", "4", "--sampler", "random", "--pruner", "none", "--local-scheduler",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    searches = [
        subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [search.communicate(timeout=900) for search in searches]
    assert [search.returncode for search in searches] == [0, 0], [err[-2000:] for _, err in outputs]
    (journal,) = (work / "searches").glob("*/study.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name=journal.parent.name, storage=storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 4 <= len(finished) <= 5  # one budget (two asks at the very same moment may add one)
    assert len({t.user_attrs["asked_by"]["pid"] for t in finished}) == 2  # both added trials
    assert len(list((work / "data" / "shards").iterdir())) == 1
