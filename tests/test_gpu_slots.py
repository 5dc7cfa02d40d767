"""One GPU (or N) per training: host-local slot locks (pipeline/runtime/gpu_slots.py), trainings in a
process of their own that sees only its slot (pipeline/training/process.py), and `doctor`.

This machine has no GPU: `[gpu_slots] gpus = N` configures N, and the tests look at what
each training process saw (`CUDA_VISIBLE_DEVICES`, recorded in its model's marker) and
at who holds which slot."""

from __future__ import annotations

import configparser
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pipeline.cli import doctor
from pipeline.core import markers
from pipeline.errors import ParameterError
from pipeline.runtime import gpu_slots
from tests.conftest import PROJECT_DIR, SMALL_TRAINING, SineRuns, make_root, run_cli
from tests.scheduler import running_luigid, start_luigi

# A process that holds one slot of `gpus` until it is killed, and says so.
HOLD = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from pipeline.runtime import gpu_slots\n"
    "gpus = sys.argv[2].split(',')\n"
    "with gpu_slots.take(gpus, 1, Path(sys.argv[1]), lambda m: print('WAIT', m, flush=True)) as taken:\n"
    "    print('GOT', ','.join(taken), flush=True)\n"
    "    time.sleep(600)\n"
)


def _holder(folder: Path, gpus: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), gpus], stdout=subprocess.PIPE, text=True, cwd=PROJECT_DIR
    )


def _line(process: subprocess.Popen[str], timeout: float = 30) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no line within the timeout"
    return process.stdout.readline().strip()


def _gone(pid: int, timeout: float = 20) -> bool:
    """Whether process `pid` ended (or is a zombie nobody reaped yet) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _free(slots: Path, gpus: list[str], timeout: float = 10) -> dict[str, int | None]:
    """The slots' holders once all are free, or as they are after `timeout`.

    A killed process with many threads (TensorFlow's) is a zombie before its last thread has
    closed its files: its locks go a moment later.
    """
    deadline = time.monotonic() + timeout
    held = gpu_slots.holders(gpus, slots)
    while any(held.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        held = gpu_slots.holders(gpus, slots)
    return held


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_host_gpus_from_the_setting_the_driver_and_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu_slots.host_gpus("3") == ["0", "1", "2"]
    assert gpu_slots.host_gpus("0") == []
    with pytest.raises(ParameterError, match=r"^\[gpu_slots\] gpus in luigi.cfg must be auto or the number"):
        gpu_slots.host_gpus("two")
    monkeypatch.setattr(gpu_slots, "detected_gpu_count", lambda: 4)
    assert gpu_slots.host_gpus("auto", {}) == ["0", "1", "2", "3"]
    assert gpu_slots.host_gpus("auto", {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert gpu_slots.host_gpus("auto", {"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at -1
    assert gpu_slots.host_gpus("auto", {"CUDA_VISIBLE_DEVICES": ""}) == []
    monkeypatch.setattr(gpu_slots, "detected_gpu_count", lambda: 0)
    assert gpu_slots.host_gpus("auto", {"CUDA_VISIBLE_DEVICES": "0"}) == []  # no GPU: no slots


def test_on_a_host_without_gpus_nothing_changes(sine_runs: SineRuns) -> None:
    if gpu_slots.detected_gpu_count():
        pytest.skip("this host has GPUs")
    project = configparser.ConfigParser()
    project.read(PROJECT_DIR / "luigi.cfg")
    assert project.get("gpu_slots", "gpus") == "auto"
    assert gpu_slots.host_gpus() == []
    for model in sine_runs.models.values():  # trained in the worker process, as before
        marker = markers.read_marker(model)
        assert marker is not None and "gpu_slot" not in marker["info"]


@pytest.mark.parametrize(
    ("gpus", "flag", "message"),
    [
        (
            "2",
            "3",
            "--TrainEstimator-gpus-per-training must be between 1 and the 2 GPUs of this host (0, 1). Received: 3",
        ),
        ("two", "1", "[gpu_slots] gpus in luigi.cfg must be auto or the number of GPUs of this host. Received: 'two'"),
    ],
)
def test_more_gpus_than_the_host_has_is_a_bad_parameter(tmp_path: Path, gpus: str, flag: str, message: str) -> None:
    make_root(tmp_path, f"[gpu_slots]\ngpus = {gpus}\nlock_dir = {tmp_path / 'slots'}\n")
    command = ["luigi", "--module", "pipeline", "TrainEstimator", "--local-scheduler"]
    out = run_cli([*command, "--TrainEstimator-gpus-per-training", flag], cwd=tmp_path)
    assert out.returncode == 40  # before anything runs
    assert [line for line in out.stderr.splitlines() if line.strip()] == [f"ERROR: ParameterError: {message}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["luigi.cfg"]  # nothing written


def test_slots_are_exclusive_waited_for_and_freed_by_sigkill(tmp_path: Path, holders: list) -> None:
    folder = tmp_path / "slots"
    first, second = _holder(folder, "0,1"), _holder(folder, "0,1")
    holders += [first, second]
    taken = {_line(first), _line(second)}
    assert taken == {"GOT 0", "GOT 1"}
    held = gpu_slots.holders(["0", "1"], folder)
    assert {held["0"], held["1"]} == {first.pid, second.pid}

    third = _holder(folder, "0,1")
    holders.append(third)
    assert _line(third) == (
        f"WAIT waiting for 1 free GPU slot(s) of 2 (held: GPU 0 by pid {held['0']}, GPU 1 by pid {held['1']})"
    )
    killed = held["0"]
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    assert _line(third, timeout=10) == "GOT 0"  # the kernel released the dead process's lock
    assert gpu_slots.holders(["0", "1"], folder) == {"0": third.pid, "1": held["1"]}
    for process in holders:
        process.kill()
        process.wait()
    assert _free(folder, ["0", "1"]) == {"0": None, "1": None}


def _write_config(folder: Path, gpus: int, pool: int, train: dict[str, str] | None = None) -> Path:
    """A luigi.cfg in the runs' working directory: small training, `gpus` GPU slots, a pool of `pool`."""
    parser = configparser.ConfigParser()
    parser["paths"] = {"root": "."}  # relative to this file: `folder` is the artifact root
    parser["TrainEstimator"] = {**SMALL_TRAINING, **(train or {})}
    parser["resources"] = {"gpu": str(pool)}
    parser["gpu_slots"] = {"gpus": str(gpus), "lock_dir": str(folder / "slots")}
    with open(folder / "luigi.cfg", "w") as f:
        parser.write(f)
    return folder / "slots"


def test_two_trainings_at_once_see_different_gpus(tmp_path: Path) -> None:
    """A pool of 2 and 2 GPUs: two trainings overlap in time, each in a process that saw one GPU of its own."""
    slots = _write_config(tmp_path, gpus=2, pool=2, train={"max_steps": "300"})
    code = (
        "import sys, luigi, pipeline\n"
        "tasks = [pipeline.TrainEstimator(learning_rate=rate) for rate in (0.01, 0.003)]\n"
        "result = luigi.build(tasks, workers=2, local_scheduler=True, detailed_summary=True, log_level='INFO')\n"
        "sys.exit(0 if result.status == luigi.LuigiStatusCode.SUCCESS else 1)\n"
    )
    out = run_cli(["python", "-c", code], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    infos = []
    for model_dir in sorted((tmp_path / "models").iterdir()):
        marker = markers.read_marker(model_dir)
        assert marker is not None, model_dir
        infos.append(marker["info"])
    assert len(infos) == 2
    seen = sorted(info["gpu_slot"]["CUDA_VISIBLE_DEVICES"] for info in infos)
    assert seen == ["0", "1"]  # never the same GPU
    assert [info["gpu_slot"]["tensorflow_imported_before"] for info in infos] == [False, False]
    assert infos[0]["gpu_slot"]["pid"] != infos[1]["gpu_slot"]["pid"]
    first, second = sorted((info["started_at"], info["finished_at"]) for info in infos)
    assert second[0] < first[1]  # at once
    assert gpu_slots.holders(["0", "1"], slots) == {"0": None, "1": None}  # released at the end


def _wait_for_training(slots: Path, staging_glob: str, root: Path, exclude: int | None = None) -> int:
    """The pid holding slot 0 once its training wrote a checkpoint (it is training, TensorFlow loaded)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pid = gpu_slots.holders(["0"], slots)["0"]
        if pid not in (None, exclude) and list(root.glob(staging_glob)):
            return int(pid)
        time.sleep(0.2)
    raise AssertionError("no training took the slot and checkpointed within 180 s")


def test_a_killed_stage_leaves_no_training_and_no_slot_behind(tmp_path: Path) -> None:
    slots = _write_config(tmp_path, gpus=1, pool=1, train={"max_steps": "1000000", "checkpoint_steps": "100"})
    checkpoint = "models/*.partial/checkpoints/checkpoint"

    # Against a real luigid: the training process's progress reaches the scheduler through the stage.
    with running_luigid(tmp_path / "luigid") as scheduler:
        run = start_luigi(["TrainEstimator", *scheduler.cli()], tmp_path, tmp_path / "first.log")
        try:
            trainer = _wait_for_training(slots, checkpoint, tmp_path)
            assert psutil.Process(trainer).ppid() == run.pid  # a child of the stage's process
            deadline, message = time.monotonic() + 60, None
            while message is None or not message.startswith("step ") or message.endswith(": training"):
                assert time.monotonic() < deadline, f"no training progress in the scheduler: {message!r}"
                (task,) = scheduler.by_family("RUNNING")["TrainEstimator"]
                message = task["status_message"]
                time.sleep(0.1)
            evaluation = r"step \d+00/1000000: loss \S+, eval loss \S+, [\d.]+ steps/s, ETA \d+(:\d\d)+"
            assert re.fullmatch(evaluation, message), message
            # The Luigi process is killed: its training process follows it, and the slot is free.
            run.send_signal(signal.SIGKILL)
            run.wait()
            assert _gone(trainer), "the training outlived its stage"
            assert _free(slots, ["0"]) == {"0": None}
        finally:
            run.kill()
            run.wait()

    # The training process is killed: the stage fails with one line, and the slot is free.
    run = start_luigi(["TrainEstimator", "--local-scheduler"], tmp_path, tmp_path / "second.log")
    try:
        second = _wait_for_training(slots, checkpoint, tmp_path, exclude=trainer)
        os.kill(second, signal.SIGKILL)
        assert run.wait(timeout=120) == 30  # [retcode] task_failed
    finally:
        run.kill()
        run.wait()
    log = (tmp_path / "second.log").read_text()
    assert "resumes from the staging folder" in log  # the first run's checkpoints are kept
    assert f"PipelineError: The training process {second} was killed by SIGKILL before it finished." in log
    assert _free(slots, ["0"]) == {"0": None}


def test_doctor_reports_tensorflow_slots_pools_and_scheduler(tmp_path: Path, holders: list) -> None:
    slots = _write_config(tmp_path, gpus=2, pool=3)
    with running_luigid(tmp_path / "luigid", resources={"gpu": 2}) as scheduler:
        with open(tmp_path / "luigi.cfg", "a") as f:
            f.write(f"\n[core]\nscheduler_port = {scheduler.port}\n")
        holder = _holder(slots, "1")
        holders.append(holder)
        assert _line(holder) == "GOT 1"
        out = run_cli(["python", "-m", "pipeline", "doctor"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    import tensorflow as tf

    assert lines[0] == f"TensorFlow {tf.__version__}, Keras {_keras_version()}: a CPU build (no CUDA)"
    assert lines[1] == "  devices it sees: /physical_device:CPU:0 (CPU)"
    native = sorted(doctor.BFLOAT16_FLAGS & doctor.cpu_flags())
    expected = f"fast: the CPU computes bfloat16 natively ({', '.join(native)})" if native else "slow: this CPU has"
    assert lines[3].startswith(
        f"  mixed precision (--TrainEstimator-mixed-precision true): bfloat16 on the CPU, {expected}"
    )
    assert lines[4].startswith("GPU slots ([gpu_slots] gpus = 2): 2 GPU(s) (0, 1), 1 per training")
    assert lines[5] == f"  locks in {slots}: GPU 0 free, GPU 1 held by pid {holder.pid}"
    assert lines[6] == "Resource pools ([resources] in luigi.cfg, what --local-scheduler uses): gpu = 3"
    assert (
        lines[7] == f"Scheduler: http://127.0.0.1:{scheduler.port}/ ([core] scheduler_host and scheduler_port): answers"
    )
    assert lines[8] == "  its pools: gpu = 2 (0 in use)"


def _keras_version() -> str:
    import keras

    return str(keras.__version__)
