"""Helpers the benchmarks share: the machine, a Luigi workspace, the resolved training configuration.

Benchmarks use the pipeline's own code paths: shards are made by the
`CreateShards` task (and `MakeShapes` for the demo images), the training
configuration is what `TrainEstimator()` resolves from luigi.cfg for the
source at hand, datasets come from `pipeline.inputs` and models from
`pipeline.networks`. Nothing here asserts: a benchmark prints figures.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import luigi
from luigi.task_register import Register

import pipeline
from pipeline import tasks
from pipeline.schema import read_manifest

DEMO_SHAPES = Path("data/raw/shapes")  # below the artifact root: MakeShapes writes it first
# Packages only tests and benchmarks import (scikit-learn, tests/requirements.txt): `make bench` and `make test`
# install them there, outside the venv's site-packages (Keras would import scikit-learn into every pipeline run).
TEST_PACKAGES = Path(sys.prefix) / "test-packages"


def test_packages() -> Path:
    """TEST_PACKAGES; one line and exit 1 when scikit-learn is not installed there (a venv of `make run` only)."""
    if not (TEST_PACKAGES / "sklearn").is_dir():
        raise SystemExit(
            f"ERROR: scikit-learn is not in {TEST_PACKAGES}: run `make bench` (or `make test`) once, "
            "which installs tests/requirements.txt there."
        )
    return TEST_PACKAGES


def machine() -> str:
    """One line: cores, RAM, CPU model, load average now, Python, TensorFlow and Keras versions."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for dist in ("tensorflow-cpu", "tensorflow", "keras"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
    return (
        f"{os.cpu_count()} cores ({model}), {ram:.0f} GiB, load average {load()}, "
        f"Python {platform.python_version()}, {', '.join(versions)}"
    )


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], digits: int = 3) -> str:
    """`median (min-max)` of repeated measurements."""
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


@contextlib.contextmanager
def workspace(root: Path, image_dir: Path | str | None = None, **sections: dict[str, Any]) -> Iterator[None]:
    """Point luigi.cfg's `[paths] root` at `root` (and `[CreateShards] image_dir`), plus any
    `section={option: value}` overrides, for the duration; task instances are rebuilt."""
    parser = luigi.configuration.get_config()
    settings: dict[str, dict[str, Any]] = {"paths": {"root": root}, **sections}
    if image_dir is not None:
        settings.setdefault("CreateShards", {})["image_dir"] = image_dir
    saved = []
    for section, options in settings.items():
        if not parser.has_section(section):
            parser.add_section(section)
        for option, value in options.items():
            saved.append((section, option, parser.get(section, option, None)))
            parser.set(section, option, str(value))
    Register.clear_instance_cache()
    try:
        yield
    finally:
        for section, option, old in reversed(saved):
            if old is None:
                parser.remove_option(section, option)
            else:
                parser.set(section, option, old)
        Register.clear_instance_cache()


def build(*stages: luigi.Task) -> None:
    """Run stages with the local scheduler, in this process; stop on failure."""
    result = luigi.build(list(stages), local_scheduler=True, detailed_summary=True, log_level="WARNING")
    if result.status != luigi.LuigiStatusCode.SUCCESS:
        raise SystemExit(result.summary_text)


def shards() -> tuple[Path, dict[str, Any]]:
    """Build the configured shards (CreateShards; MakeShapes first for the demo); their folder and manifest."""
    build(pipeline.CreateShards())
    folder = pipeline.CreateShards().output_dir()
    return folder, read_manifest(folder)


def train_task() -> tasks.TrainEstimator:
    """TrainEstimator as luigi.cfg resolves it for the current source (network, per-network values)."""
    return pipeline.TrainEstimator()


def folder_bytes(folder: Path, pattern: str = "**/*") -> int:
    """Total size of the files below `folder` matching `pattern`."""
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


def run_measured(
    args: list[str], cwd: Path | None = None, interval: float = 0.05
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Run a command (TensorFlow's C++ log quiet); its wall seconds, the peak RSS of its process tree
    in MB (sampled every `interval` seconds) and its result. A failure stops the benchmark with its stderr."""
    import psutil

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        try:
            top = psutil.Process(proc.pid)
            while proc.poll() is None:
                total = 0
                for p in [top, *top.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        continue
                peak[0] = max(peak[0], total)
                time.sleep(interval)
        except psutil.Error:
            return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    return elapsed, peak[0] / 1e6, subprocess.CompletedProcess(args, proc.returncode, out, err)
