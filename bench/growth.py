"""Growth with data: CreateShards and one pass of training at 1x, 4x and 16x the data. Prints figures; asserts nothing.

For the sine (`num_examples` 1024 x scale) and the demo shapes
(`images_per_class` 300 x scale; made first, not timed), each at every scale
in a fresh artifact root:

1. CreateShards, in a fresh process: its build time (from its marker) per
   example, and the peak memory of the process tree (the stage's process and
   its writer processes, RSS summed, sampled every 20 ms; and the stage
   process's own `ru_maxrss`);
2. one pass of training over the train split, in a fresh process: luigi.cfg's
   network and batch size on `inputs.train_dataset`, steps = train examples /
   batch size (rounded up), after a warm-up execution (tracing); time per
   example, and peak memory as above. Each execution runs the largest
   divisor of the pass's steps not above luigi.cfg's steps_per_execution, so
   that no execution runs past the pass.

Flat time per example and flat peak memory mean the stages stream: nothing
holds the whole dataset in memory, but for a training split small enough to
be kept in memory parsed (`inputs.IN_MEMORY_BYTES`, 32 MiB; the "input"
column says which).

    .venv/bin/python -m bench.growth [--scales 1 4 16] [--sources sine shapes]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from pipeline.core import markers

BASE = {"sine": 1024, "shapes": 300}  # num_examples / images_per_class at 1x (luigi.cfg's defaults)


def _settings(root: Path, source: str, scale: int) -> dict[str, Any]:
    """`common.workspace` arguments for one source at one scale."""
    if source == "sine":
        return {"CreateShards": {"num_examples": BASE["sine"] * scale}}
    return {
        "image_dir": root / common.DEMO_SHAPES,
        "MakeShapes": {"images_per_class": BASE["shapes"] * scale},
    }


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def child(phase: str, root: Path, source: str, scale: int) -> dict[str, Any]:
    """One phase in this (fresh) process; returns its figures."""
    import pipeline
    from pipeline import tasks

    with common.workspace(root, **_settings(root, source, scale)):
        if phase == "make":
            started = time.perf_counter()
            if source == "shapes":
                common.build(tasks.MakeShapes())
            return {"seconds": time.perf_counter() - started}
        if phase == "etl":
            common.build(pipeline.CreateShards())
            folder = pipeline.CreateShards().output_dir()
            marker = markers.read_marker(folder)
            if marker is None:
                raise SystemExit(f"No marker in {folder}")
            examples = sum(marker["info"]["examples"].values())
            return {"seconds": marker["info"]["elapsed_seconds"], "examples": examples}
        folder, manifest = common.shards()  # complete: nothing runs
        config = common.train_task().settings()
    return train_one_pass(folder, manifest, config)


def train_one_pass(folder: Path, manifest: dict[str, Any], config: Any) -> dict[str, Any]:
    """Steps = train examples / batch size on the real input, after one warm-up execution."""
    import dataclasses

    from pipeline.training import estimator, inputs

    estimator.configure_determinism(config.seed)
    steps = math.ceil(manifest["splits"]["train"]["num_examples"] / config.batch_size)
    spe = _largest_divisor(steps, config.steps_per_execution)
    model = estimator.build_model(dataclasses.replace(config, steps_per_execution=spe), manifest)
    ds = inputs.train_dataset(
        folder, manifest, config.batch_size, config.seed, config.shuffle_buffer, augment=config.augment
    )
    model.fit(ds, epochs=1, steps_per_epoch=spe, verbose=0)  # warm-up: tracing
    started = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    return {
        "seconds": time.perf_counter() - started,
        "examples": steps * config.batch_size,
        "steps": steps,
        "steps_per_execution": spe,
        "input": "memory" if inputs.parsed_bytes(manifest, "train") <= inputs.IN_MEMORY_BYTES else "stream",
    }


def run_child(phase: str, root: Path, source: str, scale: int) -> dict[str, Any]:
    """Run one phase in a fresh process, sampling its process tree's RSS; its figures and peak memory."""
    args = [sys.executable, "-m", "bench.growth", "--child", phase, "--root", str(root), "--sources", source]
    _, peak_mb, done = common.run_measured([*args, "--scales", str(scale)], interval=0.02)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["tree_peak_mb"] = peak_mb
    return figures


def _per_example(figures: dict[str, Any]) -> float:
    return float(figures["seconds"]) / float(figures["examples"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sources", nargs="+", choices=sorted(BASE), default=["sine", "shapes"])
    parser.add_argument("--child", choices=["make", "etl", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = child(args.child, args.root, args.sources[0], args.scales[0])
        figures["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux
        print(json.dumps(figures))
        return
    print(f"Machine: {common.machine()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in args.sources:
            for scale in args.scales:
                root = Path(tmp) / f"{source}-{scale}x"
                run_child("make", root, source, scale)
                rows.append(
                    (source, scale, run_child("etl", root, source, scale), run_child("train", root, source, scale))
                )
    print("Growth with data (each phase in a fresh process; peak memory: the process tree's RSS, and ru_maxrss):")
    print(
        f"  {'source':<7}{'scale':>6}{'examples':>9} | {'CreateShards':>12}{'us/ex':>8}{'tree MB':>9}{'own MB':>8} | "
        f"{'one pass':>9}{'input':>7}{'steps':>6}{'spe':>4}{'us/ex':>8}{'tree MB':>9}{'own MB':>8}"
    )
    for source, scale, etl, train in rows:
        etl_us, train_us = etl["seconds"] / etl["examples"] * 1e6, train["seconds"] / train["examples"] * 1e6
        print(
            f"  {source:<7}{scale:>5}x{etl['examples']:>9} | {etl['seconds']:>11.2f}s{etl_us:>8.1f}"
            f"{etl['tree_peak_mb']:>9.0f}{etl['maxrss_mb']:>8.0f} | {train['seconds']:>8.2f}s{train['input']:>7}"
            f"{train['steps']:>6}{train['steps_per_execution']:>4}{train_us:>8.1f}{train['tree_peak_mb']:>9.0f}{train['maxrss_mb']:>8.0f}"
        )
    for source in args.sources:
        scaled = [(e, t) for src, _, e, t in rows if src == source]
        for phase, index in (("CreateShards", 0), ("one pass", 1)):
            runs = [pair[index] for pair in scaled]
            # Marginal cost: the extra seconds per extra example from one scale to the next
            # (fixed costs, e.g. process pools, tracing, the first shuffle buffer, cancel out).
            marginal = [
                (b["seconds"] - a["seconds"]) / (b["examples"] - a["examples"]) * 1e6
                for a, b in itertools.pairwise(runs)
            ]
            growth = _per_example(runs[-1]) / _per_example(runs[0])
            print(
                f"  {source} {phase}: marginal us/example between scales "
                f"{', '.join(f'{m:.1f}' for m in marginal)}; per example x{growth:.2f}, "
                f"peak memory x{runs[-1]['tree_peak_mb'] / runs[0]['tree_peak_mb']:.2f} from "
                f"{scaled[0][0]['examples']} to {scaled[-1][0]['examples']} examples"
            )
    print(f"Load average at the end: {common.load()}")


if __name__ == "__main__":
    main()
