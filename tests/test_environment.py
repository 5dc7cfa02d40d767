"""The venv that runs the pipeline: `import tensorflow` loads no package that only tests use (the Makefile)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import PROJECT_DIR, TEST_PACKAGES

# Run as the pipeline runs (`luigi` of the venv, no PYTHONPATH): the distributions whose modules
# `import tensorflow, keras` loaded, and whether scikit-learn's module is among them.
LOADED = (
    "import importlib.metadata, json, sys\n"
    "import tensorflow, keras\n"
    "owners = importlib.metadata.packages_distributions()\n"
    "names = {dist for module in list(sys.modules) for dist in owners.get(module.split('.')[0], [])}\n"
    "print(json.dumps({'distributions': sorted(names), 'sklearn': 'sklearn' in sys.modules}))\n"
)


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): `tensorflow_cpu` is `tensorflow-cpu`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def listed_packages() -> list[str]:
    """The distributions tests/requirements.txt names (scikit-learn and its dependencies)."""
    text = (PROJECT_DIR / "tests" / "requirements.txt").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return [canonical(re.split(r"[=<>~ ]", line)[0]) for line in lines]


def test_import_tensorflow_in_the_run_environment_loads_no_test_only_package() -> None:
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", LOADED], env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.splitlines()[-1])
    distributions = {canonical(name) for name in loaded["distributions"]}
    assert {"keras", "numpy"} <= distributions and distributions & {"tensorflow-cpu", "tensorflow"}
    assert not loaded["sklearn"]
    assert not distributions & set(listed_packages())
    assert "scikit-learn" in listed_packages()


def test_the_tests_reach_the_test_only_packages_outside_the_venv() -> None:
    import sklearn

    assert TEST_PACKAGES.is_dir()
    assert sklearn.__file__ is not None and sklearn.__file__.startswith(str(TEST_PACKAGES))
