"""How cheap is an up-to-date check? Prints figures; asserts nothing.

Runs the sine DAG once (short training) in a temporary folder, then times
`luigi --module pipeline PlotInference --local-scheduler` on the fully
up-to-date DAG against `python -c "import luigi"` (the floor: Luigi's own
import), and `python -m pipeline status PlotInference`.

    .venv/bin/python bench/schedule_check.py [--repeat 7]
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


def wall(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
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
    repeat = parser.parse_args().repeat
    luigi_run = [str(BIN / "luigi"), "--module", "pipeline", "PlotInference", "--local-scheduler"]
    # Luigi's own modules were compiled when pip installed them; the project's are by `make setup`
    # (with PYTHONDONTWRITEBYTECODE set, nothing else writes them): compared on equal terms.
    subprocess.run([str(BIN / "python"), "-m", "compileall", "-q", str(Path(pipeline_dir()))], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "luigi.cfg").write_text(SMALL)
        wall(luigi_run, work)  # build everything once
        commands = {
            "luigi PlotInference (up to date)": luigi_run,
            "python -m pipeline status": [str(BIN / "python"), "-m", "pipeline", "status", "PlotInference"],
            'python -c "import luigi"': [str(BIN / "python"), "-c", "import luigi"],
        }
        times = {name: [wall(args, work) for _ in range(repeat)] for name, args in commands.items()}
    floor = statistics.median(times['python -c "import luigi"'])
    print(f"Up-to-date checks, median of {repeat} runs (min-max), {os.cpu_count()} cores:")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:<34} {median:6.3f} s  ({min(values):.3f}-{max(values):.3f})  {median / floor:4.2f}x import luigi"
        )


if __name__ == "__main__":
    main()
