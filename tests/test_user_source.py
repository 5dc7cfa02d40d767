"""Your own source: `--CreateShards-source module:function` (pipeline/etl/user_source.py), through the luigi command.

The functions are the README's examples (examples/my_sources.py: an .npz file, text, SQLite rows) and
small broken ones; each command runs in a fresh folder that is its own artifact root.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline import layout
from pipeline.schema import read_manifest
from tests.conftest import PROJECT_DIR, make_root, run_cli

SHORT = "[TrainEstimator]\nmax_steps = 200\ncheckpoint_steps = 100\nbatch_size = 64\n"
BROKEN = """
import numpy as np


def shapes(n=20):
    for i in range(n):
        yield {"x": np.zeros((3,) if i != 7 else (4,), "float32"), "y": i % 2}


def dtypes(n=20):
    for i in range(n):
        yield {"x": float(i) if i != 4 else "four", "y": i % 2}


def raises(n=20):
    for i in range(n):
        if i == 5:
            {}["missing"]
        yield {"x": float(i), "y": i % 2}


def nothing():
    return []


def keys(n=20):
    for i in range(n):
        yield {"x": float(i), "y": i % 2} if i != 3 else {"z": 1.0, "y": 0}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A working directory with the examples' modules and the broken ones (a user's modules, found there)."""
    make_root(tmp_path, SHORT)
    for name in ("my_sources.py", "my_networks.py"):
        shutil.copy(PROJECT_DIR / "examples" / name, tmp_path / name)
    (tmp_path / "broken.py").write_text(BROKEN)
    return tmp_path


def luigi(folder: Path, task: str, *args: str) -> tuple[int, str]:
    out = run_cli(["luigi", "--module", "pipeline", task, "--local-scheduler", *args], cwd=folder)
    return out.returncode, out.stdout + out.stderr


def shards(folder: Path) -> list[Path]:
    return sorted((folder / "data" / "shards").glob("*-*")) if (folder / "data" / "shards").exists() else []


def test_arrays_from_an_npz_file_train_the_built_in_mlp_and_reruns_follow_code_and_parameters(folder: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(folder / "digits.npz", x=digits.images[:400].astype("float32"), y=digits.target[:400])
    args = ["--CreateShards-source", "my_sources:npz_arrays", "--CreateShards-label-column", "y"]
    params = ["--CreateShards-source-params", '{"path": "digits.npz"}']
    code, out = luigi(folder, "EvaluateEstimator", *args, *params)
    assert code == 0, out[-3000:]
    [made] = shards(folder)
    manifest = read_manifest(made)
    assert manifest["problem"] == "classification" and manifest["class_names"] == [str(k) for k in range(10)]
    assert manifest["features"]["x"] == {"dtype": "float32", "shape": [8, 8]} and manifest["inputs"] == ["x"]
    assert sum(split["num_examples"] for split in manifest["splits"].values()) == 400
    report = json.loads(next((folder / "reports").glob("*-eval-*/" + layout.METRICS)).read_text())
    assert report["validation"]["accuracy"] > 0.8  # ten classes: chance is 0.1
    # A comment changes nothing; an edit of the code, a parameter or the file rewrites the shards.
    module = folder / "my_sources.py"
    module.write_text(module.read_text().replace('"""Arrays from an .npz file', '# a comment\n    """Arrays'))
    assert luigi(folder, "CreateShards", *args, *params)[0] == 0 and len(shards(folder)) == 1
    module.write_text(module.read_text().replace("for feature, target in", "for (feature, target) in"))
    assert luigi(folder, "CreateShards", *args, *params)[0] == 0 and len(shards(folder)) == 1  # formatting only
    module.write_text(module.read_text().replace("target.item()", "int(target.item())"))
    assert luigi(folder, "CreateShards", *args, *params)[0] == 0 and len(shards(folder)) == 2
    np.savez(folder / "fewer.npz", x=digits.images[:300].astype("float32"), y=digits.target[:300])
    assert luigi(folder, "CreateShards", *args, "--CreateShards-source-params", '{"path": "fewer.npz"}')[0] == 0
    assert len(shards(folder)) == 3
    np.savez(folder / "fewer.npz", x=digits.images[:200].astype("float32"), y=digits.target[:200])
    assert luigi(folder, "CreateShards", *args, "--CreateShards-source-params", '{"path": "fewer.npz"}')[0] == 0
    assert len(shards(folder)) == 4  # the file the parameters name changed


def test_text_trains_with_a_network_of_your_own_and_rows_come_from_sqlite(folder: Path) -> None:
    lines = [("good" if i % 2 else "bad", "great fine movie" if i % 2 else "awful poor plot") for i in range(120)]
    (folder / "reviews.txt").write_text("".join(f"{label}\t{text} {i % 7}\n" for i, (label, text) in enumerate(lines)))
    code, out = luigi(
        folder, "EvaluateEstimator",
        "--CreateShards-source", "my_sources:text_lines", "--CreateShards-label-column", "label",
        "--CreateShards-source-params", '{"path": "reviews.txt"}',
        "--TrainEstimator-network", "my_networks:build_text_classifier",
    )  # fmt: skip
    assert code == 0, out[-3000:]
    report = json.loads(next((folder / "reports").glob("text_lines-*-eval-*/" + layout.METRICS)).read_text())
    assert report["class_names"] == ["bad", "good"] and report["validation"]["accuracy"] == 1.0
    with sqlite3.connect(folder / "rows.db") as db:
        db.execute("CREATE TABLE t (a REAL, b REAL, kind TEXT)")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, i % 5, "odd" if i % 2 else "even") for i in range(40)])
    params = json.dumps({"path": "rows.db", "query": "SELECT a, b, kind FROM t"})
    code, out = luigi(
        folder, "CreateShards", "--CreateShards-source", "my_sources:sqlite_rows",
        "--CreateShards-label-column", "kind", "--CreateShards-source-params", params,
    )  # fmt: skip
    assert code == 0, out[-3000:]
    manifest = read_manifest(next((folder / "data" / "shards").glob("sqlite_rows-*")))
    assert manifest["class_names"] == ["even", "odd"] and sorted(manifest["inputs"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("function", "code", "message"),
    [
        ("shapes", 40, "broken:shapes: example 7, feature 'x': expected shape [3], received [4]"),
        ("dtypes", 40, "broken:dtypes: example 4, feature 'x': expected dtype float32, received string"),
        ("keys", 40, "broken:keys: example 3 lacks 'x'; has 'z' too"),
        ("nothing", 40, "broken:nothing: the source yielded no example"),
        ("raises", 30, "broken:raises raised while making example 5: KeyError: 'missing' (at broken.py:"),
        ("absent", 40, "defines no function 'absent'"),
    ],
)
def test_a_bad_source_stops_with_one_line_and_nothing_published(
    folder: Path, function: str, code: int, message: str
) -> None:
    returned, out = luigi(
        folder, "CreateShards", "--CreateShards-source", f"broken:{function}", "--CreateShards-label-column", "y"
    )
    assert returned == code, out[-3000:]
    assert message in out
    if function == "raises":
        assert textwrap.dedent('{}["missing"]') in out and "user_source.py" not in out  # the user's frames only
    assert shards(folder) == []
