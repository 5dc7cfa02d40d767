"""Shared fixtures: an isolated artifact root, small training settings, and a
`build` helper that runs tasks through Luigi and says which ones ran."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import luigi
import luigi.execution_summary
import pytest
from luigi.task_register import Register

import pipeline

PROJECT_DIR = Path(pipeline.__file__).resolve().parent.parent
# Packages only tests import (tests/requirements.txt; scikit-learn): `make test` installs them here,
# outside the venv's site-packages, so that the pipeline's own `import tensorflow` never loads them.
TEST_PACKAGES = Path(sys.prefix) / "test-packages"
if TEST_PACKAGES.is_dir() and str(TEST_PACKAGES) not in sys.path:
    sys.path.append(str(TEST_PACKAGES))
VENV_BIN = Path(sys.executable).parent

# Small but real: a few hundred steps train the sine MLP in a second or two.
SMALL_TRAINING = {"batch_size": "64", "max_steps": "200", "checkpoint_steps": "100", "steps_per_execution": "50"}
# A relative [paths] root is relative to the luigi.cfg that sets it: this makes the folder
# holding the file the artifact root of the commands run there (else it is the project's).
ROOT_HERE = "[paths]\nroot = .\n"
# `luigi --module pipeline PlotInference --local-scheduler` in-process, then whether it imported
# TensorFlow or Keras: an up-to-date DAG is checked without them (run with `python -c`).
UP_TO_DATE_RUN_IMPORTS = (
    "import sys, luigi.cmdline\n"
    "try:\n"
    "    luigi.cmdline.luigi_run(['--module', 'pipeline', 'PlotInference', '--local-scheduler'])\n"
    "except SystemExit as e:\n"
    "    assert e.code == 0, e.code\n"
    "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
)


def make_root(folder: Path, config: str = "") -> Path:
    """Write `folder`/luigi.cfg making `folder` the artifact root of commands run there, plus `config`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "luigi.cfg").write_text(ROOT_HERE + config)
    return folder


class Config:
    """Set luigi.cfg values for one test and put the old ones back after."""

    def __init__(self) -> None:
        self.parser = luigi.configuration.get_config()
        self.saved: list[tuple[str, str, str | None]] = []

    def set(self, section: str, option: str, value: object) -> None:
        old = self.parser.get(section, option, None)
        self.saved.append((section, option, old))
        if not self.parser.has_section(section):
            self.parser.add_section(section)
        self.parser.set(section, option, str(value))

    def restore(self) -> None:
        for section, option, old in reversed(self.saved):
            if old is None:
                self.parser.remove_option(section, option)
            else:
                self.parser.set(section, option, old)


@pytest.fixture
def config() -> Iterator[Config]:
    cfg = Config()
    yield cfg
    cfg.restore()


@pytest.fixture
def workspace(tmp_path: Path, config: Config) -> Iterator[Path]:
    """An empty artifact root with small training settings."""
    config.set("paths", "root", tmp_path)
    for option, value in SMALL_TRAINING.items():
        config.set("TrainEstimator", option, value)
    Register.clear_instance_cache()
    yield tmp_path
    Register.clear_instance_cache()


def build(*tasks: luigi.Task) -> set[str]:
    """Run `tasks` with the local scheduler; assert success; return the families that ran."""
    result = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING")
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    ran = luigi.execution_summary._summary_dict(result.worker)["completed"]
    return {task.task_family for task in ran}


def run_cli(
    args: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command of the venv (luigi, python) in `cwd`, capturing its output; `env`: variables to add."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    exe = str(VENV_BIN / args[0])
    return subprocess.run([exe, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# --- three finished sine runs in one artifact root (runs, diff, report, HParams) ---

SINE_VARIANTS: dict[str, dict[tuple[str, str], str]] = {
    "base": {},
    "slower": {("TrainEstimator", "learning_rate"): "0.003"},
    "reseeded": {("CreateShards", "seed"): "99", ("TrainEstimator", "seed"): "7"},
}


@dataclass(frozen=True)
class SineRuns:
    root: Path  # the artifact root
    models: dict[str, Path]  # variant -> its model_dir


@pytest.fixture(scope="session")
def sine_runs(tmp_path_factory: pytest.TempPathFactory) -> SineRuns:
    """The whole DAG (short training) for each of SINE_VARIANTS, built once for the session."""
    root = make_root(tmp_path_factory.mktemp("sine_runs"))  # the root of commands run there too
    base = Config()
    base.set("paths", "root", root)
    for option, value in SMALL_TRAINING.items():
        base.set("TrainEstimator", option, value)
    models = {}
    try:
        for name, settings in SINE_VARIANTS.items():
            variant = Config()
            for (section, option), value in settings.items():
                variant.set(section, option, value)
            Register.clear_instance_cache()
            try:
                build(pipeline.PlotInference())
                models[name] = pipeline.TrainEstimator().output_dir()
            finally:
                variant.restore()
    finally:
        base.restore()
        Register.clear_instance_cache()
    return SineRuns(root, models)
