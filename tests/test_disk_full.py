"""The disk fills up during training, for real: the artifact root on a 2 MiB tmpfs.

Checkpoints are kept (`keep_checkpoints` 1000, not significant) until the file
system is full, which happens in the middle of training. Mounting needs root
and a kernel that allows it (CI runs as root); elsewhere the test is skipped
with the reason.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import layout
from pipeline.core import markers
from tests.conftest import SMALL_TRAINING, run_cli

SIZE = "2m"  # the shards (~70 kB) and about 15 checkpoints of the sine MLP with Adam's state (~125 kB each)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of SIZE mounted below tmp_path, unmounted after."""
    if os.geteuid() != 0:
        pytest.skip(f"mounting a tmpfs needs root; running as uid {os.geteuid()}")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)], capture_output=True)
    if out.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {out.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def _checkpoint_step(staging: Path) -> int:
    text = (staging / layout.CHECKPOINTS / "checkpoint").read_text()
    return int(text.split('model_checkpoint_path: "ckpt-')[1].split('"')[0])


def test_a_full_disk_keeps_the_last_checkpoint_and_the_rerun_resumes_from_it(tmp_path: Path, small_disk: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    parser = configparser.ConfigParser()
    parser["paths"] = {"root": str(small_disk)}
    # No early stopping: the run goes to max_steps, whatever the eval loss does.
    parser["TrainEstimator"] = {**SMALL_TRAINING, "max_steps": "6000", "keep_checkpoints": "1000", "patience": "0"}
    with open(run / "luigi.cfg", "w") as f:
        parser.write(f)
    command = ["luigi", "--module", "pipeline", "TrainEstimator", "--local-scheduler"]

    full = run_cli(command, cwd=run)
    assert full.returncode == 30, full.stderr[-3000:]  # [retcode] task_failed
    message = f"No space left on the device of {small_disk / 'models'} while TrainEstimator was writing."
    assert full.stderr.count(message) == 1, full.stderr[-3000:]
    assert "python -m pipeline gc" in full.stderr and "Traceback" not in full.stderr
    (shards,) = (small_disk / "data" / "shards").iterdir()
    assert markers.read_marker(shards) is not None  # written before the disk filled
    (staging,) = (small_disk / "models").iterdir()
    assert staging.name.endswith(".partial")  # nothing published
    kept = _checkpoint_step(staging)
    assert 0 < kept < 6000  # it filled during training, after some checkpoints
    assert (staging / layout.CHECKPOINTS / f"ckpt-{kept}.index").is_file()
    assert [h["step"] for h in json.loads((staging / layout.HISTORY).read_text())][-1] >= kept

    # Space freed (the file system grown): the same command resumes from that checkpoint.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run_cli(command, cwd=run)
    assert again.returncode == 0, again.stderr[-3000:]
    (model_dir,) = (small_disk / "models").iterdir()
    marker = markers.read_marker(model_dir)
    assert marker is not None and not model_dir.name.endswith(".partial")
    assert marker["info"]["resumed_from_step"] == kept
    assert not any(name.endswith("_temp") for name in os.listdir(model_dir / layout.CHECKPOINTS))
    assert [h["step"] for h in json.loads((model_dir / layout.HISTORY).read_text())] == list(range(100, 6001, 100))
