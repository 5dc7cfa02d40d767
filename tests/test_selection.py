"""Runs by data set (pipeline/experiments/selection.py): `runs` and `report` filtered with --where and
grouped by data set and problem, a run's --name kept in its markers and shown; on three real sine runs
and one real table run, named, in one artifact root."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.errors import ParameterError
from pipeline.experiments import runs, selection
from tests.conftest import SMALL_TRAINING, SineRuns, make_root, run_cli


@dataclass(frozen=True)
class MixedRoot:
    root: Path
    table: Path  # the CSV the table run read


@pytest.fixture(scope="module")
def mixed(sine_runs: SineRuns, tmp_path_factory: pytest.TempPathFactory) -> MixedRoot:
    root = tmp_path_factory.mktemp("mixed") / "root"
    shutil.copytree(sine_runs.root, root, symlinks=True)
    training = "".join(f"{option} = {value}\n" for option, value in SMALL_TRAINING.items())
    make_root(root, f"[TrainEstimator]\n{training}")
    rows = random.Random(5)
    table = root / "flowers.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["petal", "sepal", "kind"])
        for _ in range(300):
            kind = rows.choice(["iris", "rose"])
            writer.writerow([rows.gauss(1.0 if kind == "iris" else 2.0, 0.3), rows.random(), kind])
    args = ["luigi", "--module", "pipeline", "PlotInference", "--local-scheduler", "--CreateShards-csv", "flowers.csv",
            "--CreateShards-label-column", "kind", "--name", "tabular", "--note", "two flowers"]  # fmt: skip
    out = run_cli(args, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return MixedRoot(root, table.resolve())


def _runs_command(root: Path, *args: str) -> str:
    out = run_cli(["python", "-m", "pipeline", "runs", *args], cwd=root)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _groups(text: str) -> dict[str, list[list[str]]]:
    """The printed groups: title -> rows of cells (header first)."""
    found = {}
    for block in text.strip().split("\n\n"):
        title, *lines = block.splitlines()
        found[title] = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return found


def test_runs_are_grouped_by_data_set_and_problem_with_their_name(mixed: MixedRoot) -> None:
    groups = _groups(_runs_command(mixed.root))
    assert list(groups) == ["sine, regression (3 runs):", f"table {mixed.table}, classification (1 run):"]
    sine, table = groups.values()
    assert len(sine) == 4 and len(table) == 2
    # Each table has the columns that differ inside it: the sine runs' seeds and learning rate,
    # not the table's columns; the one table run has nothing that differs, but its name and note.
    assert sine[0][:4] == ["run", "CreateShards.seed", "learning_rate", "TrainEstimator.seed"], sine[0]
    assert "csv" not in " ".join(sine[0]) and "name" not in sine[0]
    assert table[0][:3] == ["run", "name", "note"] and table[1][1:3] == ["tabular", "two flowers"], table
    assert "accuracy" in table[0] and "mse" not in table[0] and "mse" in sine[0]
    (record,) = [r for r in json.loads(_runs_command(mixed.root, "--json")) if "name" in r]
    assert (record["name"], record["note"]) == ("tabular", "two flowers")
    assert record["params"]["CreateShards.csv"] == str(mixed.table)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (["--where", "source=sine"], {"sine": 3}),
        (["--where", "source!=sine"], {"table": 1}),
        (["--where", "TrainEstimator.learning_rate<0.01"], {"sine": 1}),
        (["--where", "learning_rate<=0.01", "--where", "CreateShards.seed=99"], {"sine": 1}),
        (["--where", "name=tabular"], {"table": 1}),
        (["--where", "validation.accuracy>0"], {"table": 1}),
    ],
)
def test_where_filters_runs(mixed: MixedRoot, where: list[str], expected: dict[str, int]) -> None:
    groups = _groups(_runs_command(mixed.root, *where))
    assert {title.split()[0].rstrip(","): len(rows) - 1 for title, rows in groups.items()} == expected


def test_where_mistakes_are_one_line(mixed: MixedRoot) -> None:
    found = runs.collect(mixed.root)
    with pytest.raises(ParameterError, match="--where takes KEY OP VALUE"):
        selection.parse("learning_rate~0.01")
    with pytest.raises(ParameterError, match=r"--where colour names no parameter or metric of these runs"):
        selection.where(found, [selection.parse("colour=red")])
    with pytest.raises(ParameterError, match=r"--where seed names several columns"):
        selection.where(found, [selection.parse("seed=1")])
    out = run_cli(["python", "-m", "pipeline", "runs", "--where", "colour=red"], cwd=mixed.root)
    assert out.returncode == 40 and out.stderr.startswith("ERROR: ParameterError: --where colour names no")
    assert _runs_command(mixed.root, "--where", "source=images").startswith("No run of the 4 under ")


def test_report_has_one_section_per_data_set(mixed: MixedRoot) -> None:
    out = run_cli(["python", "-m", "pipeline", "report", "--out", str(mixed.root / "all.html")], cwd=mixed.root)
    assert out.returncode == 0, out.stderr
    page = (mixed.root / "all.html").read_text()
    titles = re.findall(r'<h2 id="set-\d">(.*?)</h2>', page)
    assert titles == ["sine, regression: 3 runs", f"table {mixed.table}, classification: 1 run"]
    assert page.count('alt="Training curves of every run"') == 2  # MSE and cross-entropy on axes of their own
    assert re.findall(r'<table id="(runs[-\d]*)">', page) == ["runs", "runs-2"]
    assert "name: tabular note: two flowers" in page
    chosen = ["report", "--where", "source=sine", "--out", str(mixed.root / "sine.html")]
    assert run_cli(["python", "-m", "pipeline", *chosen], cwd=mixed.root).returncode == 0
    sine = (mixed.root / "sine.html").read_text()
    assert re.findall(r'<h2 id="set-\d">(.*?)</h2>', sine) == ["sine, regression: 3 runs"]
    assert "tabular" not in sine
