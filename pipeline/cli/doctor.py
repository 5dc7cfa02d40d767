"""`python -m pipeline doctor`: what a training here would run on, and who would schedule it.

Four parts: what TensorFlow sees in this process (its devices, whether it is
a CUDA build and of which CUDA/cuDNN, whether mixed precision is fast on these
devices), the GPU slots of this host (pipeline/runtime/gpu_slots.py: how many, who
holds them now), the resource pools of luigi.cfg, and the central scheduler
the `luigi` command would use (whether it answers, and its own pools). This
command imports TensorFlow: it is the one place that asks it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import luigi.configuration
import luigi.interface
import luigi.rpc

from pipeline.cli import interface, scheduler
from pipeline.runtime import gpu_slots, quiet_tensorflow

# CPU flags (as /proc/cpuinfo spells them) with native bfloat16 arithmetic.
BFLOAT16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
TENSOR_CORES = (7, 0)  # compute capability from which float16 runs on Tensor Cores (Volta)


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def tensorflow_lines() -> list[str]:
    """TensorFlow's version and build, its devices, and whether mixed precision pays off on them."""
    quiet_tensorflow.load()  # first (keras imports it): its start-up lines are no part of this report
    import keras
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    if build.get("is_cuda_build"):
        kind = f"a CUDA build (CUDA {build.get('cuda_version', '?')}, cuDNN {build.get('cudnn_version', '?')})"
    else:
        kind = "a CPU build (no CUDA)"
    lines = [f"TensorFlow {tf.__version__}, Keras {keras.__version__}: {kind}"]
    devices = tf.config.list_physical_devices()
    lines.append("  devices it sees: " + ", ".join(f"{d.name} ({d.device_type})" for d in devices))
    lines.append(f"  CUDA_VISIBLE_DEVICES: {os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        slow = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            capability = tuple(details.get("compute_capability") or (0, 0))
            name = details.get("device_name", gpu.name)
            lines.append(f"  {gpu.name}: {name}, compute capability {capability[0]}.{capability[1]}")
            if capability < TENSOR_CORES:
                slow.append(gpu.name)
        verdict = (
            "fast (Tensor Cores on every GPU)"
            if not slow
            else f"slow on {', '.join(slow)} (compute capability below 7.0: no Tensor Cores); keep it false"
        )
        lines.append(f"  mixed precision (--TrainEstimator-mixed-precision true): float16, {verdict}")
    else:
        native = sorted(BFLOAT16_FLAGS & cpu_flags())
        verdict = (
            f"fast: the CPU computes bfloat16 natively ({', '.join(native)})"
            if native
            else "slow: this CPU has no native bfloat16 (no amx_bf16 or avx512_bf16); keep it false"
        )
        lines.append(f"  mixed precision (--TrainEstimator-mixed-precision true): bfloat16 on the CPU, {verdict}")
    return lines


def slot_lines() -> list[str]:
    """The GPU slots of this host and who holds each."""
    setting = gpu_slots.gpu_slots().gpus
    gpus = gpu_slots.host_gpus()
    per_training = luigi.configuration.get_config().get("TrainEstimator", "gpus_per_training", "1")
    if not gpus:
        return [
            f"GPU slots ([gpu_slots] gpus = {setting}): no GPU on this host; "
            "trainings run in the Luigi worker process, on the CPU"
        ]
    folder = gpu_slots.lock_folder()
    held = gpu_slots.holders(gpus, folder)
    states = ", ".join(f"GPU {gpu} {'free' if pid is None else f'held by pid {pid}'}" for gpu, pid in held.items())
    return [
        f"GPU slots ([gpu_slots] gpus = {setting}): {len(gpus)} GPU(s) ({', '.join(gpus)}), "
        f"{per_training} per training ([TrainEstimator] gpus_per_training); each training runs in a "
        "process of its own that sees only its slot's GPUs",
        f"  locks in {folder}: {states}",
    ]


def pool_lines() -> list[str]:
    """`[resources]` of luigi.cfg: the pools `--local-scheduler` uses (luigid reads its own luigi.cfg)."""
    parser = luigi.configuration.get_config()
    pools = dict(parser.items("resources")) if parser.has_section("resources") else {}
    shown = ", ".join(f"{name} = {value}" for name, value in sorted(pools.items())) or "none"
    return [f"Resource pools ([resources] in luigi.cfg, what --local-scheduler uses): {shown}"]


def scheduler_url() -> str:
    """The central scheduler the `luigi` command would use, as Luigi itself builds its address."""
    core = luigi.interface.core()
    if core.scheduler_url:
        return str(core.scheduler_url)
    return f"http://{core.scheduler_host}:{core.scheduler_port}/"


def _remote_pools(url: str) -> dict[str, Any]:
    page = luigi.rpc.URLLibFetcher().fetch(url.rstrip("/") + "/api/resource_list", None, scheduler.PROBE_TIMEOUT)
    return {r["name"]: r for r in json.loads(page)["response"]}


def scheduler_lines() -> list[str]:
    """Which scheduler `luigi` would use, whether it answers, and its pools."""
    url = scheduler_url()
    reason = scheduler.probe(url)
    if reason is not None:
        return [
            f"Scheduler: {url} ([core] scheduler_host and scheduler_port): does not answer ({reason}); "
            "start one with `make scheduler`, or run with --local-scheduler"
        ]
    lines = [f"Scheduler: {url} ([core] scheduler_host and scheduler_port): answers"]
    try:
        pools = _remote_pools(url)
    except (OSError, ValueError, KeyError) as error:
        return [*lines, f"  its pools: unreadable ({error})"]
    shown = ", ".join(f"{n} = {r['num_total']} ({r['num_used']} in use)" for n, r in sorted(pools.items()))
    return [*lines, f"  its pools: {shown or 'none'}"]


def report() -> list[str]:
    """Every line `python -m pipeline doctor` prints."""
    return [*tensorflow_lines(), *slot_lines(), *pool_lines(), *scheduler_lines(), f"Working directory: {Path.cwd()}"]


DESCRIPTION = """\
What a training would run on: what TensorFlow sees (devices, CUDA/cuDNN build, mixed
precision), the GPU slots of this host, the resource pools and the scheduler. The only
command that imports TensorFlow (its start-up lines are left out: TF_CPP_MIN_LOG_LEVEL=0
shows them)."""


def parser() -> interface.Arguments:
    """The command's options (its --help): none."""
    return interface.Arguments("python -m pipeline doctor", DESCRIPTION)


def main(argv: list[str]) -> int:
    """Print what TensorFlow sees, the GPU slots, the resource pools and the scheduler."""
    parser().parse_args(argv)
    print("\n".join(report()))
    return 0
