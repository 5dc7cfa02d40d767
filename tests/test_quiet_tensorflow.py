"""TensorFlow's C++ start-up lines stay off the console (pipeline/runtime/quiet_tensorflow.py) in the
stage processes and doctor, unless the user asks for them with TF_CPP_MIN_LOG_LEVEL=0."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import VENV_BIN, make_root

STARTUP_LINES = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")


def _run(args: list[str], cwd: Path, level: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run([str(VENV_BIN / "python"), *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_doctor_prints_no_startup_lines_unless_asked(tmp_path: Path) -> None:
    make_root(tmp_path)
    quiet = _run(["-m", "pipeline", "doctor"], tmp_path, None)
    assert quiet.returncode == 0, quiet.stderr
    assert "TensorFlow 2.21" in quiet.stdout
    assert not any(line in quiet.stdout + quiet.stderr for line in STARTUP_LINES), quiet.stderr
    asked = _run(["-m", "pipeline", "doctor"], tmp_path, "0")
    assert asked.returncode == 0 and "oneDNN custom operations" in asked.stderr, asked.stderr


def test_other_lines_said_during_the_import_are_kept(tmp_path: Path) -> None:
    """Only the start-up lines go: what else reaches stderr while TensorFlow is imported is written back."""
    code = (
        "import importlib, os, sys\n"
        "from pipeline.runtime import quiet_tensorflow\n"
        "real = importlib.import_module\n"
        "def noisy(name, *args):\n"
        "    if name == 'tensorflow' and 'tensorflow' not in sys.modules:  # the import itself, once\n"
        "        os.write(2, b'I0000 00:00:1796189.5   42 port.cc:153] oneDNN custom operations are on.\\n')\n"
        "        os.write(2, b'a real warning\\n')\n"
        "    return real(name, *args)\n"
        "importlib.import_module = noisy\n"
        "quiet_tensorflow.load()\n"
        "importlib.import_module = real\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = _run(["-c", code], tmp_path, None)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "True\n"
    assert out.stderr == "a real warning\n"
