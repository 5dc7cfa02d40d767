"""Training on a GPU slot, in a fresh child process that sees only its slot's GPUs.

`CUDA_VISIBLE_DEVICES` only counts when it is set before TensorFlow starts
CUDA, and the Luigi worker process that runs TrainEstimator may have imported
TensorFlow already (an earlier stage of the same run). So on a host with GPUs
the training runs in a child started afresh (`python -m pipeline.training.process`):
it takes its slot lock (pipeline/runtime/gpu_slots.py), sets the variable, and only
then imports TensorFlow. The lock is the child's own, released when the child
ends, however it ends. The child is killed when its parent dies
(PR_SET_PDEATHSIG): a stage that is killed leaves no training behind. Its
progress reaches Luigi through the parent, as JSON lines on a pipe, and its
user errors (a diverged loss, a corrupt shard) are raised again in the parent
as they were, one line each.

On a host without GPUs (none detected, none configured) nothing changes: the
training runs in the worker process, as it always did.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import errors, layout
from pipeline.runtime import gpu_slots, orphans, quiet_tensorflow

Progress = Callable[[float, str], None]
INTERRUPTED_EXIT = 130  # 128 + SIGINT: what the child exits with when it is interrupted


def train(
    config: Any,
    shards_dir: Path,
    model_dir: Path,
    progress: Progress | None = None,
    gpus_per_training: int = 1,
    trial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`estimator.train(config, shards_dir, model_dir, progress, trial=trial)`, on `gpus_per_training` GPUs of its own.

    Without GPUs on this host, in this process, as before. With GPUs, in a
    child process holding a slot; returns what `estimator.train` returned
    there, plus `gpu_slot`: the devices that process saw and its pid.
    """
    reached = [0.0]  # the share of max_steps the last progress report said: where an interruption stops

    def relay(fraction: float, message: str) -> None:
        reached[0] = fraction
        if progress is not None:
            progress(fraction, message)

    try:
        gpus = gpu_slots.host_gpus()
        if not gpus:
            from pipeline.training import estimator

            return estimator.train(config, shards_dir, model_dir, relay, trial=trial)
        gpu_slots.check_count(gpus_per_training, gpus)  # before a process is started
        slot = {"gpus": gpus, "count": gpus_per_training, "lock_dir": str(gpu_slots.lock_folder())}
        return _in_child(slot, (config, shards_dir, model_dir, trial), relay)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a pause, said in one line (Stage.run names the stage)
        raise errors.Interrupted(
            pause_line(round(reached[0] * config.max_steps), config.max_steps, model_dir)
        ) from None


def checkpoint_step(model_dir: Path) -> int | None:
    """The global step of the latest checkpoint in `model_dir` (what a rerun resumes from), or None.

    Read from TensorFlow's checkpoint state file (`model_checkpoint_path: "ckpt-500"`: the
    CheckpointManager numbers checkpoints by step), which it replaces atomically after a save.
    """
    try:
        state = (model_dir / layout.CHECKPOINTS / "checkpoint").read_text()
    except OSError:
        return None
    match = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', state, re.MULTILINE)
    return int(match[1]) if match else None


def pause_line(step: int, max_steps: int, model_dir: Path) -> str:
    """What an interrupted training says: where it stopped and where the same command goes on from."""
    saved = checkpoint_step(model_dir)
    if saved is None:
        return f"interrupted at step {step}/{max_steps}, before its first checkpoint; the same command starts it again"
    resume = f"the same command resumes from its checkpoint at step {saved}"
    return f"interrupted at step {max(step, saved)}/{max_steps}; {resume}"


def _in_child(slot: dict[str, Any], arguments: tuple[Any, ...], progress: Progress) -> dict[str, Any]:
    """Start the child, feed it the slot (JSON) and the training arguments (pickled), relay what it says."""
    read_fd, write_fd = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline.training.process", str(write_fd), str(os.getpid())],
        stdin=subprocess.PIPE,
        pass_fds=(write_fd,),
    )
    os.close(write_fd)
    result: dict[str, Any] | None = None
    failure: dict[str, str] | None = None
    try:
        assert child.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a child that died at once: its exit status says why
            # The slot first, as JSON: the child takes it before it unpickles anything (the
            # configuration's class lives in a module that imports TensorFlow).
            child.stdin.write(json.dumps(slot).encode() + b"\n")
            child.stdin.write(pickle.dumps(arguments))  # our own objects, to our own child
            child.stdin.close()
        with os.fdopen(read_fd, encoding="utf-8") as channel:
            for line in channel:
                message = json.loads(line)
                if "progress" in message:
                    progress(*message["progress"])
                elif "result" in message:
                    result = message["result"]
                elif "error" in message:
                    failure = message["error"]
        code = child.wait()
        if code == INTERRUPTED_EXIT:  # the child alone was interrupted (kill -INT): the same pause
            raise KeyboardInterrupt
    finally:
        if child.poll() is None:  # this process is being interrupted: the training ends with it
            child.kill()
            child.wait()
    if result is not None and code == 0:
        return result
    if failure is not None:
        kind = getattr(errors, failure["type"], None)
        if isinstance(kind, type) and issubclass(kind, errors.PipelineError):
            raise kind(failure["message"])
        raise RuntimeError(f"Training failed in process {child.pid} ({failure['type']}: {failure['message']}).")
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    raise errors.PipelineError(
        f"The training process {child.pid} {how} before it finished. Its staging folder keeps the last "
        "checkpoint: run the same command again to resume from it."
    )


def main(argv: list[str]) -> int:
    """The child: take the slot, set CUDA_VISIBLE_DEVICES, then import TensorFlow and train."""
    channel_fd, parent = int(argv[0]), int(argv[1])
    orphans.die_with_parent(parent, watch=True)
    with os.fdopen(channel_fd, "w", buffering=1, encoding="utf-8") as channel:

        def send(**message: Any) -> None:
            channel.write(json.dumps(message) + "\n")

        try:
            slot = json.loads(sys.stdin.buffer.readline())

            def waiting(message: str) -> None:
                send(progress=[0.0, message])

            with gpu_slots.take(slot["gpus"], slot["count"], Path(slot["lock_dir"]), waiting) as devices:
                tensorflow_before = "tensorflow" in sys.modules  # must stay False: the variable would come too late
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
                quiet_tensorflow.load()  # its start-up lines would land in the parent's live progress line
                config, shards_dir, model_dir, trial = pickle.load(sys.stdin.buffer)  # imports TensorFlow

                from pipeline.training import estimator

                result = estimator.train(config, shards_dir, model_dir, lambda f, m: send(progress=[f, m]), trial=trial)
                result["gpu_slot"] = {
                    "CUDA_VISIBLE_DEVICES": os.environ["CUDA_VISIBLE_DEVICES"],
                    "pid": os.getpid(),
                    "tensorflow_imported_before": tensorflow_before,
                }
                send(result=result)
        except errors.PipelineError as error:
            send(error={"type": type(error).__name__, "message": str(error)})
            return 1
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent says what it means
            return INTERRUPTED_EXIT
        except Exception as error:
            traceback.print_exc()  # to the worker's log: a bug, not a user's mistake
            send(error={"type": type(error).__name__, "message": str(error)})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
