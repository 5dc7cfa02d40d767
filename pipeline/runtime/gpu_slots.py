"""Which GPUs a training process sees: one slot lock per GPU of this host.

Luigi's `gpu` pool (`[resources]` in luigi.cfg) says how many trainings run at
once, counted by the scheduler over every host it serves; it does not say
which GPU each one takes. Here every GPU of the host has a lock file in a
host-local folder. A training process takes `gpus_per_training` of them (all
or none, so two trainings never deadlock on each other's halves) before it
imports TensorFlow, and sets `CUDA_VISIBLE_DEVICES` to them: trainings that run
at once never share a GPU. The locks are POSIX record locks (lockf), which
belong to the process that took them: the kernel releases them when that
process ends, however it ends (SIGKILL included), so a dead training never
keeps its slot.

`[gpu_slots] gpus` in luigi.cfg: `auto` detects the host's GPUs (the NVIDIA
driver's /proc listing, else `nvidia-smi -L`; `CUDA_VISIBLE_DEVICES`, when set,
says which of them this pipeline may use), or a number sets the count (a host
whose detection is wrong, and the tests on a machine without GPUs). No GPU:
no slots, and training runs as it always did.

Standard library and Luigi's configuration only: this runs before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import luigi

from pipeline.errors import ParameterError
from pipeline.runtime import locks

NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver manages
DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "tf-luigi-pipeline-gpu-slots"


class gpu_slots(luigi.Config):  # noqa: N801 (Luigi names config sections after the class)
    """`[gpu_slots]` in luigi.cfg: the GPUs of this host and where their slot locks live."""

    gpus = luigi.Parameter(default="auto", description="auto (detect), or the number of GPUs of this host.")
    lock_dir = luigi.Parameter(default="", description="Host-local folder of the slot locks; empty: the default.")


def lock_folder() -> Path:
    """The host-local folder of the slot locks (never on shared storage: a lock there would span hosts)."""
    configured = gpu_slots().lock_dir.strip()
    return Path(configured) if configured else DEFAULT_LOCK_DIR


@functools.cache
def detected_gpu_count() -> int:
    """How many NVIDIA GPUs this host has, without TensorFlow: the driver's listing, else nvidia-smi."""
    with contextlib.suppress(OSError):
        return len(os.listdir(NVIDIA_PROC))
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def host_gpus(setting: str | None = None, environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs trainings on this host share, as `CUDA_VISIBLE_DEVICES` names them ([] when none).

    `setting` is `[gpu_slots] gpus` (read from luigi.cfg when None): `auto`
    or a count. With `auto`, `CUDA_VISIBLE_DEVICES` in `environ` (when set)
    lists the GPUs this pipeline may use, as CUDA reads it: up to the first
    invalid entry such as -1.
    """
    environ = dict(os.environ) if environ is None else environ
    text = (gpu_slots().gpus if setting is None else setting).strip().lower()
    if text != "auto":
        if not text.isdigit():
            raise ParameterError(
                f"[gpu_slots] gpus in luigi.cfg must be auto or the number of GPUs of this host. Received: {text!r}"
            )
        return [str(i) for i in range(int(text))]
    count = detected_gpu_count()
    if count == 0:
        return []
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(count)]
    devices = []
    for device in (d.strip() for d in visible.split(",")):
        if not device or device.startswith("-"):
            break
        devices.append(device)
    return devices


def check_count(count: int, gpus: Sequence[str]) -> None:
    """Raise ParameterError unless a training can take `count` of the host's `gpus` (any count without GPUs)."""
    if gpus and not 1 <= count <= len(gpus):
        raise ParameterError(
            f"--TrainEstimator-gpus-per-training must be between 1 and the {len(gpus)} GPUs of this host "
            f"({', '.join(gpus)}). Received: {count}"
        )


def _lock_path(folder: Path, gpu: str) -> Path:
    return folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}.lock"


def _open_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with contextlib.suppress(OSError):  # another user's file: it is theirs to open to all
        os.fchmod(fd, 0o666)  # every user's trainings share the host's GPUs
    return fd


def _prepare(folder: Path) -> None:
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            folder.chmod(0o1777)  # like /tmp: every user's trainings lock here, each removes only its own


def _try_take(gpus: Sequence[str], count: int, folder: Path) -> list[tuple[str, int]] | None:
    """Lock `count` free GPUs without waiting, or none (all or nothing)."""
    taken: list[tuple[str, int]] = []
    for gpu in gpus:
        fd = _open_lock(_lock_path(folder, gpu))
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for `doctor` and the waiting message
        taken.append((gpu, fd))
        if len(taken) == count:
            return taken
    for _, fd in taken:
        os.close(fd)  # closing releases the lock
    return None


@contextlib.contextmanager
def take(
    gpus: Sequence[str],
    count: int,
    folder: Path,
    waiting: Callable[[str], None] | None = None,
    poll_seconds: float = 0.5,
) -> Iterator[list[str]]:
    """Hold `count` of `gpus` for this process while the block runs; wait while fewer are free.

    Yields the GPUs taken, for `CUDA_VISIBLE_DEVICES`. `waiting` is told once,
    in words, when the process has to wait. The locks are this process's:
    they end with it, and a second `take` in the same process would not see
    them (POSIX record locks), so one process takes one slot.
    """
    check_count(count, gpus)
    _prepare(folder)
    told = False
    while (taken := _try_take(gpus, count, folder)) is None:
        if waiting is not None and not told:
            held = ", ".join(f"GPU {gpu} by pid {pid}" for gpu, pid in holders(gpus, folder).items() if pid)
            waiting(f"waiting for {count} free GPU slot(s) of {len(gpus)} (held: {held or 'just now'})")
            told = True
        time.sleep(poll_seconds)
    try:
        yield [gpu for gpu, _ in taken]
    finally:
        for _, fd in taken:
            os.close(fd)


def holders(gpus: Sequence[str], folder: Path) -> dict[str, int | None]:
    """GPU -> the pid of the process holding its slot, or None when it is free.

    Ask from a process that holds no slot itself (closing a probe would release its own lock).
    """
    found: dict[str, int | None] = {}
    for gpu in gpus:
        path = _lock_path(folder, gpu)
        if not locks.is_held(path):
            found[gpu] = None
            continue
        try:
            with open(path, "rb") as f:  # its holder wrote its pid when it took it
                text = f.read(32).decode(errors="replace").strip()
        except FileNotFoundError:
            text = ""
        found[gpu] = int(text) if text.isdigit() else -1
    return found
