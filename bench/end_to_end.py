"""End to end: stage times of the default sine run, beside the seed's setting.

Runs `luigi --module pipeline PlotInference --local-scheduler` in a fresh
temporary folder: with luigi.cfg's defaults, then with the seed experiment's
training (full batch: every step sees all 683 training examples; 1024 steps;
Adam at a constant rate) at each of `--seed-learning-rates`. Prints each
stage's build time (from its marker), the whole command's wall time and the
validation MSE.

The seed's learning rate is not recorded (it scored about 0.024 validation
MSE in about 30 s). Full batch, 1024 steps, a constant rate: 0.001 is far from
converged (0.33), 0.003 and 0.01 (the default run's rate) reach about 0.04,
0.03 reaches about 0.013, 0.1 oscillates (about 0.08). So the fair seed
setting is 0.03, its best rate: the default runs it beside 0.01, the default
run's own rate (`--seed-learning-rates 0.001 0.003 0.01 0.03 0.1` for the sweep).

    .venv/bin/python -m bench.end_to_end [--seed-learning-rates 0.01 0.03]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
STAGES = [("CreateShards", "data/shards/*"), ("TrainEstimator", "models/*"), ("EvaluateEstimator", "reports/*-eval-*"),
          ("PlotInference", "reports/*-plots-*")]  # fmt: skip
SEED_SETTING = [
    "--TrainEstimator-batch-size", "683", "--TrainEstimator-max-steps", "1024", "--TrainEstimator-lr-decay", "false",
]  # fmt: skip


def run(args: list[str]) -> dict[str, float]:
    """Run the DAG in a fresh folder; return stage seconds, wall seconds and validation MSE."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "luigi.cfg").write_text("[paths]\nroot = .\n")  # relative to this file: the artifact root
        started = time.perf_counter()
        out = subprocess.run(
            [str(BIN / "luigi"), "--module", "pipeline", "PlotInference", "--local-scheduler", *args],
            cwd=work, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )  # fmt: skip
        wall = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        figures = {"wall": wall}
        for stage, pattern in STAGES:
            (folder,) = [p for p in work.glob(pattern) if p.is_dir()]
            marker = json.loads((folder / "_SUCCESS.json").read_text())
            figures[stage] = marker["info"]["elapsed_seconds"]
        (metrics,) = work.glob("reports/*-eval-*/metrics.json")
        figures["val_mse"] = json.loads(metrics.read_text())["validation"]["mse"]
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-learning-rates", type=float, nargs="+", default=[0.01, 0.03])
    rates = parser.parse_args().seed_learning_rates
    print(f"Machine: {os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    rows = {"default (luigi.cfg)": run([])}
    for rate in rates:
        label = f"seed setting, learning rate {rate:g}"
        rows[label] = run([*SEED_SETTING, "--TrainEstimator-learning-rate", str(rate)])
    names = [s for s, _ in STAGES]
    print(f"{'configuration':<40}" + "".join(f"{n:>18}" for n in names) + f"{'wall':>8}{'val MSE':>10}")
    for label, f in rows.items():
        print(f"{label:<40}" + "".join(f"{f[n]:>17.2f}s" for n in names) + f"{f['wall']:>7.1f}s{f['val_mse']:>10.4f}")
    default = rows["default (luigi.cfg)"]
    for label, f in list(rows.items())[1:]:
        print(
            f"{label}: TrainEstimator {f['TrainEstimator'] / default['TrainEstimator']:.2f}x, "
            f"wall {f['wall'] / default['wall']:.2f}x, val MSE {f['val_mse'] / default['val_mse']:.2f}x the default's"
        )
    print("The seed experiment itself (from the issue): about 0.024 validation MSE in about 30 s.")
    print("(stage seconds are build times from the markers; the first TensorFlow stage includes TF's import)")


if __name__ == "__main__":
    main()
