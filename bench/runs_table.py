"""How fast is `python -m pipeline runs` with 1,000 trained models? Prints figures; asserts nothing.

Runs the sine DAG once (short training) in a temporary artifact root, then
copies its four real markers into 1,000 runs: each a model_dir with its own
learning rate and seed (and one of 10 shards folders), an evaluation with its
own metrics and a plots folder, every `upstream` pointing where it should.
Only the markers are copied (that is all `runs` reads). Then it times the
whole command (`python -m pipeline runs`, the table, and `--json`) against
`python -c "import luigi"`, and `runs.collect` + `runs.format_table` alone.

    .venv/bin/python -m bench.runs_table [--runs 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pipeline
from bench.common import build, load, machine, median, spread, workspace
from pipeline import paths
from pipeline.core import markers
from pipeline.experiments import runs

BIN = Path(sys.executable).parent
SMALL = {"max_steps": 200, "checkpoint_steps": 100}  # [TrainEstimator]: a short training


def _fake_identity(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _write(folder: Path, marker: dict[str, Any]) -> None:
    folder.mkdir(parents=True)
    (folder / markers.MARKER).write_text(json.dumps(markers.seal(marker), indent=1, sort_keys=True))


def make_runs(source: Path, target: Path, count: int) -> None:
    """`count` runs under `target` made of the real markers of the one run under `source`."""
    real: dict[str, dict[str, Any]] = {}
    for stage in (
        pipeline.CreateShards(),
        pipeline.TrainEstimator(),
        pipeline.EvaluateEstimator(),
        pipeline.PlotInference(),
    ):
        marker = markers.read_marker(stage.output_dir())
        if marker is None:
            raise SystemExit(f"The sine DAG did not complete under {source}.")
        real[stage.task_family] = marker
    parents = paths.stage_parents(target)
    shards = []
    for variant in range(10):
        marker = copy.deepcopy(real["CreateShards"])
        marker["params"]["seed"] = 1000 + variant
        marker["identity"] = _fake_identity("shards", variant)
        _write(parents["data"] / f"sine-{marker['identity'][:12]}", marker)
        shards.append(marker)
    for index in range(count):
        upstream = shards[index % 10]
        model = copy.deepcopy(real["TrainEstimator"])
        model["params"]["learning_rate"] = round(0.001 * (1 + index % 17), 4)
        model["params"]["seed"] = index
        model["identity"] = _fake_identity("model", index)
        model["upstream"] = {"CreateShards": upstream["identity"]}
        model["info"]["finished_at"] += index
        _write(parents["models"] / f"sine-mlp-{model['identity'][:12]}", model)
        evaluation = copy.deepcopy(real["EvaluateEstimator"])
        evaluation["identity"] = _fake_identity("evaluation", index)
        evaluation["upstream"] = {"CreateShards": upstream["identity"], "TrainEstimator": model["identity"]}
        for name, value in evaluation["info"]["validation"].items():
            if isinstance(value, float):
                evaluation["info"]["validation"][name] = value * (1 + (index * 7919 % 1000) / 1000)
        _write(parents["reports"] / f"sine-mlp-eval-{evaluation['identity'][:12]}", evaluation)
        plots = copy.deepcopy(real["PlotInference"])
        plots["identity"] = _fake_identity("plots", index)
        plots["upstream"] = {
            "CreateShards": upstream["identity"],
            "EvaluateEstimator": evaluation["identity"],
            "TrainEstimator": model["identity"],
        }
        _write(parents["reports"] / f"sine-mlp-plots-{plots['identity'][:12]}", plots)


def wall(args: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return elapsed, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "one", Path(tmp) / "many"
        with workspace(source, TrainEstimator=SMALL):
            build(pipeline.PlotInference())
            make_runs(source, target, args.runs)
        # The commands run in `target`: its luigi.cfg makes it the artifact root ("." is the
        # folder of the luigi.cfg that sets it; without one, the project's own root is used).
        (target / "luigi.cfg").write_text("[paths]\nroot = .\n")
        marker_bytes = sum(p.stat().st_size for p in target.rglob(markers.MARKER))
        folders = sum(1 for _ in target.rglob(markers.MARKER))
        print(f"{args.runs} runs: {folders} stage folders, {marker_bytes / 1e6:.1f} MB of markers")
        commands = {
            "python -m pipeline runs": [str(BIN / "python"), "-m", "pipeline", "runs"],
            "python -m pipeline runs --json": [str(BIN / "python"), "-m", "pipeline", "runs", "--json"],
            'python -c "import luigi"': [str(BIN / "python"), "-c", "import luigi"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):  # interleaved, so that a load spike hits every command alike
            for name, command in commands.items():
                elapsed, stdout = wall(command, target)
                times[name].append(elapsed)
                if name == "python -m pipeline runs":
                    rows = len(stdout.splitlines()) - 1
                    if rows != args.runs:
                        raise SystemExit(f"The table has {rows} rows, not {args.runs}.")
        in_process = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            runs.format_table(runs.collect(target))
            in_process.append(time.perf_counter() - started)
    floor = median(times['python -c "import luigi"'])
    print(f"Median of {args.repeat} (min-max), load average now {load()}:")
    for name, values in times.items():
        print(f"  {name:<34} {spread(values)} s  {median(values) / floor:4.2f}x import luigi")
    print(f"  {'collect + format_table (in process)':<34} {spread(in_process)} s")


if __name__ == "__main__":
    main()
