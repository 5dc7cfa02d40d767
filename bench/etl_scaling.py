"""ETL scaling: CreateShards on the image source with 1 and 2 writer processes. Prints figures; asserts nothing.

Makes `--images-per-class` demo shapes once (MakeShapes), then runs the
CreateShards task (through Luigi, in a fresh artifact root each time: the
shards are rebuilt) on that folder with `writer_processes` 1 and 2,
alternating, after one warm-up run (the raw files in the page cache). Prints
the build time of the stage (`shards.create_shards`: checking and writing),
the whole task's time (with its identity and marker: listing and hashing),
the speed-up of 2 processes over 1 (target: at least 1.7x on 2 cores), and
the MB/s of shards written against the disk's sequential write speed
(measured here: `--disk-mb` MB written in 1 MB blocks, then fsync).

The machine's own ceiling is measured beside each pair of runs: the same
pure-CPU work (zlib) in 2 processes against 1. On a VM its cores are not
always both there; the stage's speed-up is also given as a share of it.

    .venv/bin/python -m bench.etl_scaling [--repeat 3] [--images-per-class 2000] [--disk-mb 512]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import zlib
from pathlib import Path

import pipeline
from bench import common
from pipeline import tasks
from pipeline.core import markers


def disk_write_speed(folder: Path, megabytes: int) -> float:
    """MB/s of writing `megabytes` MB sequentially to a new file in `folder`, fsync included."""
    block = os.urandom(1 << 20)
    path = folder / "disk-speed.bin"
    started = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return megabytes * (1 << 20) / 1e6 / elapsed


def _compress(rounds: int) -> None:
    data = os.urandom(1 << 16)
    for _ in range(rounds):
        zlib.compress(data, 6)


def cpu_ceiling(rounds: int = 1000) -> float:
    """Speed-up of 2 processes over 1 on the same pure-CPU work: what the machine allows right now."""
    with multiprocessing.get_context("forkserver").Pool(2) as pool:
        pool.map(_compress, [1, 1])  # started
        started = time.perf_counter()
        pool.map(_compress, [rounds], chunksize=1)
        pool.map(_compress, [rounds], chunksize=1)
        one = time.perf_counter() - started
        started = time.perf_counter()
        pool.map(_compress, [rounds, rounds], chunksize=1)
        two = time.perf_counter() - started
    return one / two


def run_create_shards(root: Path, image_dir: Path, processes: int) -> dict[str, float]:
    """Build CreateShards in a fresh artifact root; its build and task seconds, bytes written and read."""
    with common.workspace(root, image_dir=image_dir, CreateShards={"writer_processes": processes}):
        started = time.perf_counter()
        common.build(pipeline.CreateShards())
        task_seconds = time.perf_counter() - started
        folder = pipeline.CreateShards().output_dir()
    marker = markers.read_marker(folder)
    if marker is None:
        raise SystemExit(f"No marker in {folder}")
    manifest = json.loads((folder / "manifest.json").read_text())
    return {
        "build": marker["info"]["elapsed_seconds"],
        "task": task_seconds,
        "shard_bytes": common.folder_bytes(folder, "*/*.tfrecord"),
        "raw_bytes": common.folder_bytes(image_dir, "*/*.png"),
        "examples": sum(s["num_examples"] for s in manifest["splits"].values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--images-per-class", type=int, default=2000, help="MakeShapes images per class")
    parser.add_argument("--disk-mb", type=int, default=512, help="MB written to measure the disk")
    args = parser.parse_args()
    print(f"Machine: {common.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw_root = work / "raw"
        with common.workspace(raw_root, MakeShapes={"images_per_class": args.images_per_class}):
            common.build(tasks.MakeShapes())
        image_dir = raw_root / common.DEMO_SHAPES
        runs = iter(range(1_000_000))
        run_create_shards(work / f"run-{next(runs)}", image_dir, 2)  # warm-up: page cache, forkserver imports
        results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        ceiling = []
        for _ in range(args.repeat):
            ceiling.append(cpu_ceiling())
            for processes in results:
                results[processes].append(run_create_shards(work / f"run-{next(runs)}", image_dir, processes))
        disk = [disk_write_speed(work, args.disk_mb) for _ in range(args.repeat)]
    first = results[1][0]
    print(
        f"CreateShards on {first['examples']:.0f} demo images ({first['raw_bytes'] / 1e6:.1f} MB of 64x64 PNGs -> "
        f"{first['shard_bytes'] / 1e6:.1f} MB of shards, luigi.cfg's shard counts), median (min-max) of {args.repeat}:"
    )
    build = {p: [r["build"] for r in rs] for p, rs in results.items()}
    task = {p: [r["task"] for r in rs] for p, rs in results.items()}
    for processes in results:
        seconds = common.median(build[processes])
        label = f"{processes} writer process{'es' if processes > 1 else '  '}"
        print(
            f"  {label}: build {common.spread(build[processes], 2)} s, "
            f"task {common.spread(task[processes], 2)} s; {first['examples'] / seconds:6.0f} images/s, "
            f"{first['shard_bytes'] / 1e6 / seconds:5.2f} MB/s of shards written, "
            f"{first['raw_bytes'] / 1e6 / seconds:5.2f} MB/s of images read"
        )
    speedup = common.median(build[1]) / common.median(build[2])
    task_speedup = common.median(task[1]) / common.median(task[2])
    print(f"  speed-up of 2 processes over 1: build {speedup:.2f}x, task {task_speedup:.2f}x (target >= 1.7x)")
    print(
        f"  the machine's ceiling (pure CPU, 2 processes over 1): {common.spread(ceiling, 2)}x; "
        f"the build's speed-up is {speedup / common.median(ceiling):.0%} of it"
    )
    disk_speed = common.median(disk)
    written = first["shard_bytes"] / 1e6 / common.median(build[2])
    print(
        f"  disk sequential write {common.spread(disk, 0)} MB/s (fsync'd); shards at 2 processes are "
        f"{written / disk_speed:.2%} of it: the ETL is bound by CPU (decoding, resizing, encoding), not the disk"
    )
    print(f"Load average at the end: {common.load()}")


if __name__ == "__main__":
    main()
