"""How cheap is an up-to-date check? Prints figures; asserts nothing.

Runs the sine DAG once (short training) in a temporary folder, then times
`luigi --module pipeline PlotInference --local-scheduler` on the fully
up-to-date DAG against `python -c "import luigi"` (the floor: Luigi's own
import), and `python -m pipeline status PlotInference`.

    .venv/bin/python bench/schedule_check.py [--repeat 7] [--base DIR]

With `--base DIR` (a checkout of another commit, e.g. a `git worktree`), the
same checks of that commit's package run in the same rounds, interleaved with
this one's: figures side by side under the same load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# "." is the folder of this luigi.cfg (the temporary folder): the artifact root of the runs.
SMALL = "[paths]\nroot = .\n[TrainEstimator]\nmax_steps = 200\ncheckpoint_steps = 100\n"


def wall(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=environment)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return elapsed


def pipeline_dir() -> str:
    """The source folder of the `pipeline` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("pipeline")
    assert spec is not None and spec.submodule_search_locations
    return str(next(iter(spec.submodule_search_locations)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--base", type=Path, help="a checkout of another commit, measured in the same rounds")
    args = parser.parse_args()
    repeat = args.repeat
    luigi_run = [str(BIN / "luigi"), "--module", "pipeline", "PlotInference", "--local-scheduler"]
    status = [str(BIN / "python"), "-m", "pipeline", "status", "PlotInference"]
    trees = {"": Path(pipeline_dir()).parent}
    if args.base:
        trees[f" [base {args.base.name}]"] = args.base.resolve()
    # Luigi's own modules were compiled when pip installed them; the project's are by `make setup`
    # (with PYTHONDONTWRITEBYTECODE set, nothing else writes them): compared on equal terms.
    for tree in trees.values():
        subprocess.run([str(BIN / "python"), "-m", "compileall", "-q", str(tree / "pipeline")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        commands: dict[str, tuple[list[str], Path, dict[str, str]]] = {}
        for label, tree in trees.items():
            work = Path(tmp) / (label.strip(" []").replace(" ", "-") or "this")
            work.mkdir()
            (work / "luigi.cfg").write_text(SMALL)
            env = {"PYTHONPATH": str(tree)}
            wall(luigi_run, work, env)  # build everything once
            commands[f"luigi PlotInference (up to date){label}"] = (luigi_run, work, env)
            commands[f"python -m pipeline status{label}"] = (status, work, env)
        commands['python -c "import luigi"'] = ([str(BIN / "python"), "-c", "import luigi"], Path(tmp), {})
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeat):  # round-robin: each round measures every command under the same load
            for name, (command, work, env) in commands.items():
                times[name].append(wall(command, work, env))
    floor = statistics.median(times['python -c "import luigi"'])
    print(f"Up-to-date checks, median of {repeat} runs (min-max), {os.cpu_count()} cores:")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:<52} {median:6.3f} s  ({min(values):.3f}-{max(values):.3f})  {median / floor:4.2f}x import luigi"
        )


if __name__ == "__main__":
    main()
