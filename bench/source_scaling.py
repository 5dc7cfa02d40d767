"""Up-to-date checks and the ETL on large source folders. Prints figures; asserts nothing.

For each N (10,000, 100,000 and 1,000,000 files by default) it builds a folder
of N PNG files in classes of `--per-class` files (ImageNet's layout: 1,000
classes of about 1,000 images at 1,000,000), each file a hard link to one of
`--distinct` demo shapes of 64x64 pixels (hard links: the folder costs
directory entries, not N images' bytes; no inode gets more than ext4's 65,000
links). Then, in an artifact root of its own:

1. `luigi --module pipeline CreateShards --local-scheduler` on that folder,
   once: the ETL, with its images/s (from the stage's marker) and the peak
   RSS of its process tree (the stage process and its writer processes,
   summed, sampled every 50 ms);
2. the same command again, now up to date, `--repeat` times, and
   `python -m pipeline status CreateShards` as often, against
   `python -c "import luigi"`: the median of each, and per file the time
   above Luigi's import divided by N. Each up-to-date check is checked to
   have run nothing (and status to say "up to date");
3. in this process, `listing.scan` (the one pass: stat, digest, classes)
   against the floor, `os.listdir` and one `stat` per entry doing nothing
   else, both per file, interleaved.

    .venv/bin/python -m bench.source_scaling [--sizes 10000 100000 1000000] [--repeat 5] [--work DIR]

With `--work DIR` the folders are kept there and reused by the next run (their
creation takes about 15 s per million files); by default a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench import common
from pipeline.core import listing, markers
from pipeline.etl import shapes

BIN = Path(sys.executable).parent
SHAPES = ("circle", "square", "triangle", "star", "cross")


def make_folder(folder: Path, count: int, per_class: int, distinct: int) -> None:
    """`count` PNGs in `folder/c<k>/<i>.png`, hard links to `distinct` shapes drawn once (kept if complete)."""
    done = folder / ".complete"
    if done.exists() and done.read_text() == f"{count} {per_class} {distinct}":
        return
    pool = folder.parent / f"pool-{distinct}"
    if not (pool / f"{distinct - 1}.png").exists():
        pool.mkdir(parents=True, exist_ok=True)
        for i in range(distinct):
            pixels = shapes.draw_shape(SHAPES[i % len(SHAPES)], 64, seed=1, index=i)
            Image.fromarray(pixels).save(pool / f"{i}.png")
    sources = [os.fspath(pool / f"{i}.png") for i in range(distinct)]
    for start in range(0, count, per_class):
        class_dir = folder / f"c{start // per_class:05d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(start, min(start + per_class, count)):
            target = os.path.join(class_dir, f"{i:07d}.png")
            if not os.path.exists(target):
                os.link(sources[i % distinct], target)
    done.write_text(f"{count} {per_class} {distinct}")  # hidden: not part of the source folder's listing


def stat_floor(folder: Path) -> float:
    """Seconds to list every folder below `folder` and stat every entry (as the pass does, relative to
    the folder's descriptor), doing nothing else: the pass's floor."""
    started = time.perf_counter()
    pending = [os.fspath(folder)]
    while pending:
        path = pending.pop()
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in os.listdir(descriptor):
                if stat.S_ISDIR(os.stat(name, dir_fd=descriptor).st_mode):
                    pending.append(os.path.join(path, name))
        finally:
            os.close(descriptor)
    return time.perf_counter() - started


def pass_seconds(folder: Path) -> float:
    """Seconds of one `listing.scan` of `folder`."""
    started = time.perf_counter()
    listing.scan(folder)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=1000, help="files in each class folder")
    parser.add_argument("--distinct", type=int, default=500, help="distinct images the files link to")
    parser.add_argument("--work", type=Path, help="keep the folders here (reused by the next run)")
    args = parser.parse_args()
    print(f"Machine: {common.machine()}")
    luigi_command = [str(BIN / "luigi"), "--module", "pipeline", "CreateShards", "--local-scheduler"]
    status_command = [str(BIN / "python"), "-m", "pipeline", "status", "CreateShards"]
    import_luigi = [str(BIN / "python"), "-c", "import luigi"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for count in args.sizes:
            folder = work / f"images-{count}"
            started = time.perf_counter()
            make_folder(folder, count, args.per_class, args.distinct)
            made = time.perf_counter() - started
            floors, passes = [], []
            for _ in range(args.repeat):
                floors.append(stat_floor(folder))
                passes.append(pass_seconds(folder))
            with tempfile.TemporaryDirectory(dir=work) as run_dir:
                run = Path(run_dir)
                (run / "luigi.cfg").write_text(f"[paths]\nroot = .\n\n[CreateShards]\nimage_dir = {folder}\n")
                etl_wall, etl_peak, _ = common.run_measured(luigi_command, run)
                (shards_dir,) = (run / "data" / "shards").glob("images-*")
                marker = markers.read_marker(shards_dir)
                if marker is None:
                    raise SystemExit(f"No marker in {shards_dir}")
                build_seconds = marker["info"]["elapsed_seconds"]
                checks, statuses, imports, check_peaks = [], [], [], []
                for _ in range(args.repeat):  # interleaved: the machine's drift hits all three alike
                    seconds, peak, done = common.run_measured(luigi_command, run)
                    if "ran successfully" in done.stderr or "complete ones were encountered" not in done.stderr:
                        raise SystemExit(f"The up-to-date check ran something:\n{done.stderr[-3000:]}")
                    checks.append(seconds)
                    check_peaks.append(peak)
                    seconds, _, shown = common.run_measured(status_command, run)
                    if "up to date" not in shown.stdout:
                        raise SystemExit(f"status does not say up to date:\n{shown.stdout}")
                    statuses.append(seconds)
                    imports.append(common.run_measured(import_luigi, run)[0])
            rows.append(
                {
                    "files": count,
                    "made_seconds": round(made, 1),
                    "etl_wall": etl_wall,
                    "etl_build": build_seconds,
                    "etl_peak_mb": etl_peak,
                    "check": checks,
                    "check_peak_mb": max(check_peaks),
                    "status": statuses,
                    "import_luigi": imports,
                    "stat_floor": floors,
                    "pass": passes,
                    "load": common.load(),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"Source folders of N PNGs (classes of {args.per_class}, hard links to {args.distinct} 64x64 shapes); "
        f"checks: median of {args.repeat} (min-max); per file: (median - import luigi) / N"
    )
    print(
        f"  {'N':>9} | {'ETL build':>9} {'images/s':>8} {'peak MB':>7} | {'up-to-date check':>22} {'us/file':>7} "
        f"{'peak MB':>7} | {'status':>22} {'us/file':>7} | {'import luigi':>12} | pass, floor us/file | load"
    )
    for row in rows:
        floor = statistics.median(row["import_luigi"])
        per_file = {name: (statistics.median(row[name]) - floor) / row["files"] * 1e6 for name in ("check", "status")}
        print(
            f"  {row['files']:>9,} | {row['etl_build']:>8.1f}s {row['files'] / row['etl_build']:>8.0f} "
            f"{row['etl_peak_mb']:>7.0f} | {common.spread(row['check'])} s {per_file['check']:>7.2f} "
            f"{row['check_peak_mb']:>7.0f} | {common.spread(row['status'])} s {per_file['status']:>7.2f}"
            f" | {floor:>10.3f} s | {statistics.median(row['pass']) / row['files'] * 1e6:>5.2f}, "
            f"{statistics.median(row['stat_floor']) / row['files'] * 1e6:>5.2f} | {row['load']}"
        )
    print(f"Load average at the end: {common.load()}")


if __name__ == "__main__":
    main()
