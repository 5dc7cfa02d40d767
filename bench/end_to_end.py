"""End to end: stage times of the default sine run, beside the seed's setting.

Runs `luigi --module pipeline PlotInference --local-scheduler` in a temporary
folder twice: with luigi.cfg's defaults, and with the seed experiment's
training (full batch: every step sees all 683 training examples; 1024 steps;
Adam at a constant rate). Prints each stage's build time (from its marker),
the whole command's wall time and the validation MSE.

    .venv/bin/python bench/end_to_end.py
"""

from __future__ import annotations

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
    "--TrainEstimator-batch-size", "683", "--TrainEstimator-max-steps", "1024",
    "--TrainEstimator-lr-decay", "false", "--TrainEstimator-learning-rate", "0.001",
]  # fmt: skip


def run(args: list[str]) -> dict[str, float]:
    """Run the DAG in a fresh folder; return stage seconds, wall seconds and validation MSE."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
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
    rows = {"default (luigi.cfg)": run([]), "seed setting (full batch, 1024 steps)": run(SEED_SETTING)}
    names = [s for s, _ in STAGES]
    print(f"{'configuration':<40}" + "".join(f"{n:>18}" for n in names) + f"{'wall':>8}{'val MSE':>10}")
    for label, f in rows.items():
        print(f"{label:<40}" + "".join(f"{f[n]:>17.2f}s" for n in names) + f"{f['wall']:>7.1f}s{f['val_mse']:>10.4f}")
    print("(stage seconds are build times from the markers; the first TensorFlow stage includes TF's import)")


if __name__ == "__main__":
    main()
