"""The command line a new user meets in their second hour: user data found by what it is, not by
how its path is spelled (core/parameters.DataPathParameter); one boolean syntax (BooleanParameter);
no prefixes; every command's own --help; the data source in every stage's parameters in the UI."""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register

from pipeline import __main__ as commands
from pipeline.cli import interface
from pipeline.core.stage import Stage
from tests.conftest import make_root, run_cli
from tests.test_images import make_folder


def _task(argv: list[str], cwd: Path) -> Stage:
    """The task `luigi --module pipeline ARGV` builds, run from `cwd`."""
    return _built(argv, cwd)[0]


def _built(argv: list[str], cwd: Path) -> tuple[Stage, dict[str, str]]:
    """The task `luigi --module pipeline ARGV` builds, run from `cwd`, and the parameters it shows the
    scheduler (asked while the command line is Luigi's, as Luigi does)."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        Register.clear_instance_cache()
        with CmdlineParser.global_instance(argv) as parser:
            task: Stage = parser.get_task_obj()
            task.identity()  # computed here, in the working directory it was spelled for
            return task, task.to_str_params()
    finally:
        os.chdir(old)


@pytest.fixture
def project(tmp_path: Path, workspace: Path) -> Iterator[Path]:
    """A user's folder `work/` with a table and a folder of images, and a link to it."""
    work = tmp_path / "work"
    work.mkdir()
    rows = random.Random(3)
    with open(work / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "label"])
        writer.writerows([[rows.random(), rows.random(), rows.choice("pq")] for _ in range(200)])
    make_folder(work / "my_photos", {"circle": 6, "square": 6})
    (tmp_path / "link").symlink_to(work, target_is_directory=True)
    yield tmp_path


@pytest.mark.parametrize(
    ("flag", "name", "extra"),
    [("csv", "table.csv", ["--CreateShards-label-column", "label"]), ("image-dir", "my_photos", [])],
)
def test_one_identity_however_the_path_is_spelled(project: Path, flag: str, name: str, extra: list[str]) -> None:
    work = project / "work"
    spellings = [  # (the path as typed, the working directory it is typed in)
        (name, work),
        (f"work/{name}", project),
        (str(work / name), Path("/")),
        (str(project / "link" / name), project),  # through a symbolic link
        (f"../work/./{name}", project / "link"),  # from another working folder, through the link
    ]
    tasks = [_task(["CreateShards", f"--CreateShards-{flag}", path, *extra], cwd) for path, cwd in spellings]
    assert len({task.identity().digest for task in tasks}) == 1
    assert len({task.output_dir() for task in tasks}) == 1
    real = str((work / name).resolve())
    for task in tasks:
        assert task.to_str_params()[flag.replace("-", "_")] == real  # what the UI shows
        assert task.identity().as_dict()["params"][flag.replace("-", "_")] == real  # what status compares
    (listed,) = {task.source_folders()[flag.replace("-", "_")] for task in tasks}  # the folder whose listing counts
    assert str(listed) == real


def test_status_finds_the_shards_made_from_another_folder(project: Path) -> None:
    """Shards made with a relative path from work/ are up to date for an absolute one from the project."""
    make_root(project)
    (project / "work" / "luigi.cfg").write_text("[paths]\nroot = ..\n")  # the same root, from work/
    made = run_cli(["luigi", "--module", "pipeline", "CreateShards", "--local-scheduler", "--CreateShards-csv",
                    "table.csv", "--CreateShards-label-column", "label"], cwd=project / "work")  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    linked = str(project / "link" / "table.csv")
    status = run_cli(["python", "-m", "pipeline", "status", "CreateShards", "--CreateShards-csv", linked,
                      "--CreateShards-label-column", "label"], cwd=project)  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    assert "up to date" in status.stdout and "changed" not in status.stdout


def test_every_stage_shows_its_data_source_in_the_ui(project: Path) -> None:
    table = str((project / "work" / "table.csv").resolve())
    for family in ("CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"):
        argv = [family, "--CreateShards-csv", table, "--CreateShards-label-column", "label", "--name", "tabular"]
        params = _built(argv, project)[1]
        assert (params["source"], params["csv"], params["name"]) == ("table", table, "tabular"), (family, params)
    sine = _built(["PlotInference"], project)[1]
    assert sine["source"] == "sine" and "csv" not in sine and "name" not in sine


@pytest.mark.parametrize(
    ("words", "values"),
    [
        ([], (False, False, True, False)),
        (["--CreateShards-skip-unreadable", "--TrainEstimator-force"], (True, True, True, False)),
        (["--CreateShards-skip-unreadable", "true", "--TrainEstimator-lr-decay", "false"], (True, False, False, False)),
        (["--TrainEstimator-mixed-precision", "--TrainEstimator-force", "false"], (False, False, True, True)),
        (["--TrainEstimator-mixed-precision=true", "--CreateShards-skip-unreadable=FALSE"], (False, False, True, True)),
    ],
)
def test_every_boolean_takes_true_false_or_the_bare_flag(
    project: Path, words: list[str], values: tuple[bool, ...]
) -> None:
    Register.clear_instance_cache()
    with CmdlineParser.global_instance(["TrainEstimator", *words]) as parser:  # upstream reads the command line
        task = parser.get_task_obj()
        shards = task.requires()
        assert (shards.skip_unreadable, task.force, task.lr_decay, task.mixed_precision) == values


def test_a_boolean_refuses_other_values_and_help_shows_both_forms(project: Path) -> None:
    out = run_cli(["luigi", "--module", "pipeline", "CreateShards", "--CreateShards-skip-unreadable", "yes"], project)
    assert out.returncode == 40
    assert out.stderr.strip().splitlines()[-1] == (
        "ERROR: ParameterError: --CreateShards-skip-unreadable (or [CreateShards] skip_unreadable in luigi.cfg) is not "
        "accepted: Expected true or false (the flag alone means true). Received: 'yes'"
    )
    text = interface.dag_help("TrainEstimator", ["CreateShards", "TrainEstimator"])
    for flag, value in (("CreateShards-skip-unreadable", "false"), ("TrainEstimator-lr-decay", "true"),
                        ("TrainEstimator-mixed-precision", "false"), ("TrainEstimator-force", "false")):  # fmt: skip
        line = next(line for line in text.splitlines() if line.startswith(f"  --{flag} "))
        assert line == f"  --{flag} [true|false] {value}"
    assert text.count("true or false; the flag alone means true.") == 5  # two force, three booleans


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (["TrainEstimator", "--TrainEstimator-max-step", "300"], "--TrainEstimator-max-steps"),
        (["PlotInference", "--CreateShards-num-train", "2"], "--CreateShards-num-train-shards"),
        (["TrainEstimator", "--max-step", "300"], "--TrainEstimator-max-steps"),
    ],
)
def test_a_prefix_is_an_unknown_parameter_with_the_one_meant(project: Path, argv: list[str], meant: str) -> None:
    out = run_cli(["python", "-m", "pipeline", "status", *argv], cwd=project)
    assert out.returncode == 40, out.stdout
    assert out.stderr.startswith(f"ERROR: ParameterError: Unknown parameter {argv[1]} (did you mean {meant}?).")


def test_every_command_prints_its_own_help(tmp_path: Path) -> None:
    """`python -m pipeline COMMAND --help`: that command's usage and options, exit 0, for every command
    in the table (a command added later without a parser() fails here)."""
    make_root(tmp_path)
    options = {"gc": "--older-than DAYS", "runs": "--where KEY OP VALUE", "report": "--out FILE", "diff": "A B",
               "status": "TASK", "sweep": "TASK", "search": "--trials TRIALS", "worker": "TF_CONFIG",
               "doctor": "TensorFlow", "predict": "RUN FILES"}  # fmt: skip
    assert set(options) == set(commands.COMMANDS)
    for name in commands.COMMANDS:
        for help_flag in ("--help", "-h"):
            out = run_cli(["python", "-m", "pipeline", name, "PlotInference", help_flag], cwd=tmp_path)
            assert out.returncode == 0, (name, out.stderr)
            assert out.stdout.startswith(f"usage: python -m pipeline {name}"), (name, out.stdout[:300])
            assert options[name] in out.stdout and "PlotInference's" not in out.stdout, (name, out.stdout)
            assert out.stderr == ""


def test_status_without_a_task_names_its_usage(tmp_path: Path) -> None:
    make_root(tmp_path)
    out = run_cli(["python", "-m", "pipeline", "status"], cwd=tmp_path)
    assert out.returncode == 40
    assert out.stderr == (
        "ERROR: ParameterError: status needs a task first, e.g. python -m pipeline status PlotInference. "
        "Usage: python -m pipeline status TASK [--<Task>-<param> VALUE ...]\n"
    )
