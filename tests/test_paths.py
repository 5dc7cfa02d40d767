"""Where the artifact root is (pipeline/paths.py): relative to the luigi.cfg that sets it, not to the working folder."""

from __future__ import annotations

from pathlib import Path

from luigi.task_register import Register

from pipeline import paths
from tests.conftest import PROJECT_DIR, Config, run_cli

PRINT_ROOT = (
    "import sys; from luigi.cmdline_parser import CmdlineParser; import pipeline; from pipeline import paths\n"
    "with CmdlineParser.global_instance(['CreateShards', *sys.argv[1:]]):\n"
    "    print(paths.root())\n"
)


def _root(cwd: Path, *args: str) -> str:
    out = run_cli(["python", "-c", PRINT_ROOT, *args], cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_relative_root_is_relative_to_its_luigi_cfg(tmp_path: Path) -> None:
    project_cfg, below = tmp_path / "experiment", tmp_path / "experiment" / "notebooks"
    below.mkdir(parents=True)
    (project_cfg / "luigi.cfg").write_text("[paths]\nroot = ../artifacts\n")
    # The project's own luigi.cfg (`root = .`) wherever the command runs, unless a luigi.cfg there sets one.
    assert _root(tmp_path) == str(PROJECT_DIR)
    assert _root(below) == str(PROJECT_DIR)
    assert _root(project_cfg) == str(tmp_path / "artifacts")
    # On the command line, a relative root is the user's: relative to where they are.
    assert _root(below, "--paths-root", "out") == str(below / "out")


def test_an_absolute_root_stays_as_given(tmp_path: Path, config: Config) -> None:
    config.set("paths", "root", tmp_path / "a" / ".." / "b")
    Register.clear_instance_cache()
    try:
        assert paths.root() == tmp_path / "b"
        assert paths.stage_dir("models", "m") == tmp_path / "b" / "models" / "m"
    finally:
        Register.clear_instance_cache()  # no task or config object of this root outlives the test
