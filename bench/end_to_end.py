"""End to end: the default sine run's timeline before and after, side by side in one run (issue 23).

"Before" is a base commit (`--base`, by default the one issue 23 started from),
checked out in a temporary git worktree and run with this venv, scikit-learn
importable as it was when `make run` installed it into the venv (the folder
`make test` installs it to is put on its PYTHONPATH). "After" is this checkout,
without it. Each round runs `luigi --module pipeline PlotInference
--local-scheduler` in a fresh folder, before then after, so that both see the
same load; the table gives the median over the rounds of each phase
(bench/timeline.py cuts them at the console lines), the wall and CPU seconds
of the command and the validation MSE.

Then a sweep of `--sweep-variants` learning rates (`python -m pipeline sweep
PlotInference`) with one worker and with `--workers 2`, before and after:
EvaluateEstimator's and PlotInference's build seconds (from their markers),
and the ratio of two workers to one. One run's stage of 0.15 s varies by
±30 %, so the sweeps are repeated (`--sweep-repeat`, interleaved) and each
variant's ratio is the median of its 2-worker times over the median of its
1-worker times; each run's worst variant is printed too. The trainings of the
sweep take `--sweep-steps` steps: the stages measured do not depend on it.

    .venv/bin/python -m bench.end_to_end [--rounds 3] [--base REV] [--sweep-variants 4] [--sweep-repeat 3]
                                         [--no-sweep | --sweep-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.common import machine, test_packages
from bench.timeline import PHASES, Timeline, run

PROJECT_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASE = "e3182f2"  # main when issue 23 started (the layout of issue 18)
SWEEP_RATES = ["0.01", "0.02", "0.005", "0.003", "0.03", "0.002"]


@contextlib.contextmanager
def checkout(rev: str, folder: Path) -> Iterator[Path]:
    """`rev` of this repository in a detached git worktree at `folder`, removed afterwards."""
    subprocess.run(["git", "-C", str(PROJECT_DIR), "worktree", "add", "--detach", "-q", str(folder), rev], check=True)
    try:
        subprocess.run([str(BIN / "python"), "-m", "compileall", "-q", str(folder / "pipeline")], check=True)
        yield folder
    finally:
        subprocess.run(["git", "-C", str(PROJECT_DIR), "worktree", "remove", "--force", str(folder)], check=False)


def environment(code: Path, with_test_packages: bool) -> dict[str, str]:
    """The environment of a run of the package in `code` (first on the path, before the editable install)."""
    path = [str(code), *([str(test_packages())] if with_test_packages else [])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), TF_CPP_MIN_LOG_LEVEL="2")


def fresh(parent: Path, name: str) -> Path:
    """An empty artifact root `parent/name` (its luigi.cfg points the root at itself)."""
    work = parent / name
    work.mkdir()
    (work / "luigi.cfg").write_text("[paths]\nroot = .\n")
    return work


def default_run(work: Path, env: dict[str, str]) -> tuple[Timeline, float]:
    """The default run in `work`: its timeline and validation MSE."""
    timeline = run([str(BIN / "luigi"), "--module", "pipeline", "PlotInference", "--local-scheduler"], work, env)
    if timeline.returncode != 0:
        raise SystemExit("\n".join(line for _, line in timeline.lines[-40:]))
    (metrics,) = work.glob("reports/*-eval-*/metrics.json")
    return timeline, json.loads(metrics.read_text())["validation"]["mse"]


def sweep_seconds(
    work: Path, env: dict[str, str], variants: int, steps: int, workers: int
) -> dict[str, dict[str, float]]:
    """A sweep of `variants` learning rates on `workers` workers: the wall and CPU seconds of each evaluation's
    and plot's build, by its folder (the same in every sweep of one code), from their markers (the base commit
    records no CPU seconds: nan)."""
    rates = ",".join(SWEEP_RATES[:variants])
    command = [str(BIN / "python"), "-m", "pipeline", "sweep", "PlotInference", "--TrainEstimator-learning-rate", rates,
               "--TrainEstimator-max-steps", str(steps), "--workers", str(workers), "--local-scheduler"]  # fmt: skip
    timeline = run(command, work, env)
    if timeline.returncode != 0:
        raise SystemExit("\n".join(line for _, line in timeline.lines[-40:]))
    seconds: dict[str, dict[str, float]] = {}
    for stage, pattern in (("EvaluateEstimator", "reports/*-eval-*"), ("PlotInference", "reports/*-plots-*")):
        for folder in work.glob(pattern):
            info = json.loads((folder / "_SUCCESS.json").read_text())["info"]
            seconds.setdefault(stage, {})[folder.name] = info["elapsed_seconds"]
            seconds.setdefault(f"{stage} CPU", {})[folder.name] = info.get("cpu_seconds", float("nan"))
    return seconds


def show(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def timelines(base: Path, rounds: int, tmp: Path) -> None:
    """The default run's phases before and after, median over `rounds` interleaved rounds."""
    codes = {"before": (base, True), "after": (PROJECT_DIR, False)}
    runs: dict[str, list[tuple[Timeline, float]]] = {name: [] for name in codes}
    for round_number in range(rounds):
        for name, (code, with_test_packages) in codes.items():
            work = fresh(tmp, f"{name}-{round_number}")
            runs[name].append(default_run(work, environment(code, with_test_packages)))
    print(f"\nThe default run (luigi --module pipeline PlotInference --local-scheduler), median of {rounds} rounds")
    print(f"{'phase':<40}{'before':>10}{'after':>10}")
    for label, _, _ in PHASES:
        row = [median([t.phases()[label] for t, _ in runs[name]]) for name in codes]
        print(f"{label:<40}" + "".join(f"{show(v):>9}s" for v in row))
    for label, value in (("wall, in all", lambda t, m: t.wall), ("CPU seconds (user + system)", lambda t, m: t.cpu)):
        row = [median([value(t, m) for t, m in runs[name]]) for name in codes]
        print(f"{label:<40}" + "".join(f"{show(v):>9}s" for v in row))
    steps = [runs[name][0][0].steps() for name in codes]
    print(f"{'training steps (number)':<40}" + "".join(f"{s or 0:>10}" for s in steps))
    mse = [median([m for _, m in runs[name]]) for name in codes]
    print(f"{'validation MSE':<40}" + "".join(f"{v or 0:>10.5f}" for v in mse))
    walls = [sorted(round(t.wall, 1) for t, _ in runs[name]) for name in codes]
    print(f"(wall of each round: before {walls[0]}, after {walls[1]})")


def sweeps(base: Path, variants: int, steps: int, tmp: Path, repeat: int) -> None:
    """EvaluateEstimator and PlotInference in a sweep, one worker against two, before and after, `repeat` times."""
    print(f"\nA {variants}-variant sweep, {steps} training steps each, {repeat} times with 1 and with 2 workers")
    print("(interleaved): build seconds per stage, the median over the repeats, then over the variants;")
    print("CPU: the stage's process, all its threads (the base commit does not record it)")
    print("ratio: of the medians; each variant: the median of its stage's 2-worker times over the median of its")
    print("1-worker times, median (max) over the variants; single runs: each run's worst variant")
    print(f"{'':<30}{'1 worker':>10}{'2 workers':>11}{'ratio':>8}{'each variant':>20}   single runs")
    for name, code, with_test_packages in (("before", base, True), ("after", PROJECT_DIR, False)):
        env = environment(code, with_test_packages)
        ones, twos = [], []
        for number in range(repeat):
            ones.append(sweep_seconds(fresh(tmp, f"sweep-{name}-1-{number}"), env, variants, steps, 1))
            twos.append(sweep_seconds(fresh(tmp, f"sweep-{name}-2-{number}"), env, variants, steps, 2))
        for stage in ("EvaluateEstimator", "PlotInference", "EvaluateEstimator CPU", "PlotInference CPU"):
            one = {folder: statistics.median(run[stage][folder] for run in ones) for folder in ones[0][stage]}
            two = {folder: statistics.median(run[stage][folder] for run in twos) for folder in one}
            alone, shared = statistics.median(one.values()), statistics.median(two.values())
            each = [two[folder] / one[folder] for folder in sorted(one)]
            worst = [max(b[stage][f] / a[stage][f] for f in a[stage]) for a, b in zip(ones, twos, strict=True)]
            print(
                f"{name + ': ' + stage:<30}{alone:>9.2f}s{shared:>10.2f}s{shared / alone:>7.2f}x"
                f"{statistics.median(each):>11.2f}x ({max(each):.2f}x)   {', '.join(f'{w:.2f}x' for w in worst)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of the default DAG before and after")
    parser.add_argument("--base", default=BASE, help="the commit to compare with (default: %(default)s)")
    parser.add_argument("--sweep-variants", type=int, default=4, choices=range(1, len(SWEEP_RATES) + 1))
    parser.add_argument("--sweep-steps", type=int, default=1000)
    parser.add_argument("--sweep-repeat", type=int, default=3, help="sweeps with 1 and with 2 workers, interleaved")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--sweep-only", action="store_true")
    options = parser.parse_args()
    print(f"Machine: {machine()}")
    test_packages()  # the base imports scikit-learn with TensorFlow, as `make run` installed it then
    print(f"Before: {options.base} (scikit-learn importable); after: {PROJECT_DIR} (the venv as `make run` leaves it)")
    with tempfile.TemporaryDirectory() as name, checkout(options.base, Path(name) / "base") as base:
        if not options.sweep_only:
            timelines(base, options.rounds, Path(name))
        if not options.no_sweep:
            sweeps(base, options.sweep_variants, options.sweep_steps, Path(name), options.sweep_repeat)
    print(f"\nLoad average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
