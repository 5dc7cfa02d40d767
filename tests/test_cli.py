"""Mistakes at the command line (pipeline/interface.py): one line, the name meant, exit code 40; help; pipes.

Every case runs the real `luigi` or `python -m pipeline` command (no TensorFlow is
imported: each takes about as long as importing Luigi).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import pipeline
from pipeline.cli import interface
from tests.conftest import VENV_BIN, make_root, run_cli

LUIGI = ["luigi", "--module", "pipeline"]
STATUS = ["python", "-m", "pipeline", "status"]

MISTAKES = [
    (["PlotInferance"], "Unknown task PlotInferance. Did you mean PlotInference?"),
    (["PlotInference", "--TrainEstimator-learning_rate", "0.003"],
     "Unknown parameter --TrainEstimator-learning_rate (did you mean --TrainEstimator-learning-rate?)"),
    (["PlotInference", "--TrainEstimator-learnign-rate", "0.003"],
     "Unknown parameter --TrainEstimator-learnign-rate (did you mean --TrainEstimator-learning-rate?)"),
    (["PlotInference", "--learning-rate", "0.003"],
     "Unknown parameter --learning-rate (did you mean --TrainEstimator-learning-rate?)"),
    (["PlotInference", "--TrainEstimator-max-steps", "6k"],
     "--TrainEstimator-max-steps (or [TrainEstimator] max_steps in luigi.cfg) is not accepted: Expected an integer"),
]  # fmt: skip


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(("args", "message"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_luigi_and_status_say_the_same_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    make_root(tmp_path)
    run = run_cli([*LUIGI, *args, "--local-scheduler"], cwd=tmp_path)
    status = run_cli([*STATUS, *args], cwd=tmp_path)
    for out in (run, status):
        assert out.returncode == 40, out.stderr
        assert _one_line(out.stderr).startswith("ERROR: ParameterError: " + message)
    assert _one_line(run.stderr) == _one_line(status.stderr)
    assert [p.name for p in tmp_path.iterdir()] == ["luigi.cfg"]  # nothing written


def test_closest() -> None:
    flags = [
        "--TrainEstimator-learning-rate",
        "--TrainEstimator-lr-decay",
        "--CreateShards-seed",
        "--TrainEstimator-seed",
    ]
    assert interface.closest("--trainestimator_LEARNING_rate", flags) == "--TrainEstimator-learning-rate"
    assert interface.closest("--lr-decay", flags) == "--TrainEstimator-lr-decay"
    assert interface.closest("--seed", flags) == "--CreateShards-seed or --TrainEstimator-seed"
    assert interface.closest("--zzz", flags) is None


def test_unknown_commands_of_python_m_pipeline(tmp_path: Path) -> None:
    make_root(tmp_path)
    for args, message in (
        (["statsu", "PlotInference"], "Unknown command statsu. Did you mean status?"),
        ([], "No command given."),
        (["gc", "--unused"], "gc --unused removes complete results of other configurations: say which"),
    ):
        out = run_cli(["python", "-m", "pipeline", *args], cwd=tmp_path)
        assert out.returncode == 40, out.stderr
        assert _one_line(out.stderr).startswith("ERROR: ParameterError: " + message)


def test_help_lists_every_parameter_of_the_dag_above(tmp_path: Path) -> None:
    make_root(tmp_path, "[TrainEstimator]\nbatch_size = 96\n")
    out = run_cli([*LUIGI, "EvaluateEstimator", "--help"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for cls in (pipeline.CreateShards, pipeline.TrainEstimator, pipeline.EvaluateEstimator):
        family = cls.get_task_family()
        assert f"\n{family}: " in text
        for name, param in cls.get_params():
            flag = f"--{family}-{name.replace('_', '-')}"
            assert re.search(rf"\n  {re.escape(flag)} .*\n      {re.escape(interface._description(param))}", text), flag
    assert "\n  --TrainEstimator-batch-size 96\n" in text  # the value luigi.cfg gives, here the folder's
    assert "or the problem to pose. Choices: auto, classification, regression.\n" in text  # sorted, not a set's order
    assert "--PlotInference-force" not in text and "MakeShapes" not in text  # below it; not in the sine's DAG
    assert text.index("\nCreateShards: ") < text.index("\nTrainEstimator: ") < text.index("\nEvaluateEstimator: ")
    # The DAG as the command line makes it: the demo images come first.
    demo = run_cli([*LUIGI, "CreateShards", "--CreateShards-image-dir", "data/raw/shapes", "--help"], cwd=tmp_path)
    assert "\n  --MakeShapes-images-per-class 300\n" in demo.stdout


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    make_root(tmp_path)
    reader, writer = os.pipe()
    os.close(reader)  # as `status | head` once head has exited
    try:
        out = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "pipeline", "status", "PlotInference"],
            cwd=tmp_path, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(writer)
    assert out.stderr == ""
    assert out.returncode == interface.BROKEN_PIPE_EXIT


def test_status_exit_code_says_whether_anything_is_stale(tmp_path: Path) -> None:
    make_root(tmp_path)
    out = run_cli([*STATUS, "CreateShards"], cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert out.stdout.startswith(f"Artifact root: {tmp_path}\n") and "no output yet" in out.stdout
    # (exit code 0 once everything is up to date: tests/test_console.py)


def test_only_a_users_mistake_is_one_line(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command goes through interface.run_command: a PipelineError is `ERROR: <class>: <message>`, exit 40;
    any other error (a ValueError from a bug, too) keeps its traceback."""
    from pipeline import __main__ as commands
    from pipeline.experiments import runs

    assert commands.main(["runs", "--json", "--csv"]) == interface.BAD_PARAMETER_EXIT
    assert capsys.readouterr().err == (
        "ERROR: ParameterError: python -m pipeline runs: argument --csv: not allowed with argument --json. "
        "Usage: python -m pipeline runs [-h] [--where KEY OP VALUE] [--search NAME] [--sort-by COLUMN] "
        "[--reverse] [--all] [--json | --csv]\n"
    )
    assert commands.main(["report"]) == interface.BAD_PARAMETER_EXIT  # an empty root
    assert capsys.readouterr().err == (
        f"ERROR: DataError: No trained models under {workspace.resolve() / 'models'}: nothing to report.\n"
    )

    def broken(root: Path, search: str | None = None) -> list[runs.Run]:
        raise ValueError("zip() argument 2 is shorter than argument 1")

    monkeypatch.setattr(runs, "collect", broken)
    with pytest.raises(ValueError, match="zip"):
        commands.main(["runs"])
