"""The small things of the second hour: error examples that are valid JSON, a JSON object called one,
the demo's own marker not reported as a user's file, .cache/ ignored by git."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import PROJECT_DIR, make_root, run_cli


def _error(out_stderr: str) -> str:
    (line,) = [line for line in out_stderr.splitlines() if line.startswith("ERROR: ")]
    return line


def test_the_augment_errors_example_is_json(tmp_path: Path) -> None:
    make_root(tmp_path)
    out = run_cli(
        ["python", "-m", "pipeline", "status", "TrainEstimator", "--TrainEstimator-augment", '["flop"]'], tmp_path
    )
    assert out.returncode == 40
    line = _error(out.stderr)
    assert "unknown augmentation 'flop'" in line
    example = re.search(r"\(e\.g\. (\[.*?\]), \[\] for none\)", line)
    assert example is not None, line
    assert json.loads(example[1]) == ["flip_horizontal", "flip_vertical"]


def test_a_malformed_json_object_is_called_one(tmp_path: Path) -> None:
    make_root(tmp_path)
    out = run_cli(
        ["python", "-m", "pipeline", "status", "TrainEstimator", "--TrainEstimator-network-params", '{"width": 64'],
        tmp_path,
    )
    assert out.returncode == 40
    line = _error(out.stderr)
    assert line.startswith("ERROR: ParameterError: --TrainEstimator-network-params")
    assert line.endswith('Expected a JSON object, e.g. {"width": 64}.') and "a string" not in line, line


def test_the_demos_own_marker_is_no_ignored_user_file(tmp_path: Path) -> None:
    make_root(tmp_path, "[MakeShapes]\nimages_per_class = 3\nimage_size = 16\n")
    made = run_cli(["luigi", "--module", "pipeline", "MakeShapes", "--local-scheduler"], tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    shapes = tmp_path / "data" / "raw" / "shapes"
    assert (shapes / "_SUCCESS.json").is_file()
    status = ["python", "-m", "pipeline", "status", "CreateShards", "--CreateShards-image-dir", str(shapes)]
    out = run_cli(status, tmp_path)
    assert "note:" not in out.stdout, out.stdout
    (shapes / "notes.txt").write_text("a user's file")  # one of the user's is still named
    out = run_cli(status, tmp_path)
    (note,) = [line.strip() for line in out.stdout.splitlines() if "note:" in line]
    assert note.startswith(f"note: 1 file(s) in {shapes} are ignored") and note.endswith(": notes.txt"), note


def test_the_cache_folder_is_ignored_by_git() -> None:
    assert ".cache/" in (PROJECT_DIR / ".gitignore").read_text().splitlines()
