"""Crash anywhere: SIGKILL each stage at seeded random moments, then check and rerun.

For each trial a stage is chosen in turn; the outputs above it are copied from
an uninterrupted reference run, `luigi --module pipeline <Stage>` is started,
and once it has begun writing (its `.partial` staging folder exists; for
training, once its event files exist, i.e. TensorFlow is loaded and the loop
runs) it is killed after a random fraction of the stage's reference build
time. Then:

1. no published folder is incomplete: every folder outside `.partial` has a
   valid marker and all its files at their recorded sizes;
2. the stage reruns to completion (in this process);
3. its output equals the reference run's (content digests; for training,
   the final checkpoint's bytes, i.e. the same weights and optimizer state);
4. a killed training resumes from its last checkpoint (losing at most one
   checkpoint interval).

    .venv/bin/python bench/crash_trials.py [--trials 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import luigi
from luigi.task_register import Register

import pipeline
from pipeline import identity, paths
from pipeline.stage import Stage, dag

BIN = Path(sys.executable).parent
SMALL_CFG = {
    "paths": {"root": "."},
    "TrainEstimator": {"max_steps": "1000", "checkpoint_steps": "100", "batch_size": "64"},
}
STAGE_ORDER = ["CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"]


SetOption = Callable[[str, str, str], None]


def _configure(root: Path, set_option: SetOption) -> None:
    """Point this process's Luigi config at `root` with the small settings."""
    set_option("paths", "root", str(root))
    for section, options in SMALL_CFG.items():
        for option, value in options.items():
            if section != "paths":  # "." in the luigi.cfg written into `root` (for the `luigi` commands)
                set_option(section, option, value)
    Register.clear_instance_cache()


def _write_cfg(root: Path) -> None:
    lines = [f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in o.items()) for s, o in SMALL_CFG.items()]
    (root / "luigi.cfg").write_text("".join(lines))


def _stages() -> dict[str, Stage]:
    return {stage.task_family: stage for stage in dag(pipeline.PlotInference())}


def incomplete_publications(root: Path) -> list[str]:
    """Published folders (not staging) whose marker is missing or whose files are not all there."""
    problems = []
    for folder in paths.stage_folders():
        if folder.name.endswith(".partial") or ".old-" in folder.name:
            continue
        marker = identity.read_marker(folder)
        if marker is None:
            problems.append(f"{folder}: no valid marker")
            continue
        for rel, rec in marker["files"].items():
            path = folder / rel
            if not path.is_file() or path.stat().st_size != rec["size"]:
                problems.append(f"{folder}: {rel} missing or short")
    return problems


def _fingerprint(stage: Stage) -> dict[str, str]:
    """What must equal the reference: file digests (training: its final checkpoint, not the zip exports)."""
    marker = identity.read_marker(stage.output_dir())
    assert marker is not None
    files = marker["files"]
    if stage.task_family == "TrainEstimator":
        last = max(
            (f for f in files if f.startswith("checkpoints/ckpt-")), key=lambda f: int(f.split("-")[1].split(".")[0])
        )
        step = last.split(".")[0]
        return {f: r["sha256"] for f, r in files.items() if f.startswith(step) or f == paths.HISTORY}
    return {f: r["sha256"] for f, r in files.items()}


def _last_checkpoint_step(staging: Path) -> int:
    state = staging / paths.CHECKPOINTS / "checkpoint"
    try:
        text = state.read_text()
    except OSError:
        return 0
    return int(text.split("ckpt-")[1].split('"')[0]) if "ckpt-" in text else 0


def run_trials(workdir: Path, trials: int, seed: int, set_option: SetOption | None = None) -> list[dict[str, Any]]:
    """Run the trials below `workdir`; return one record per trial (raises on the first broken invariant).

    `set_option(section, option, value)` changes this process's Luigi config
    (default: set it directly; tests pass one that is undone after).
    """
    set_option = set_option or luigi.configuration.get_config().set
    rng = random.Random(seed)
    reference = workdir / "reference"
    reference.mkdir(parents=True)
    _write_cfg(reference)
    _configure(reference, set_option)
    result = luigi.build([pipeline.PlotInference()], local_scheduler=True, detailed_summary=True)
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    ref_stages = _stages()
    ref = {name: _fingerprint(stage) for name, stage in ref_stages.items()}
    ref_folders = {name: stage.output_dir().relative_to(reference) for name, stage in ref_stages.items()}
    build_seconds = {
        name: identity.read_marker(stage.output_dir())["info"]["elapsed_seconds"]  # type: ignore[index]
        for name, stage in ref_stages.items()
    }
    records = []
    for trial in range(trials):
        name = STAGE_ORDER[trial % len(STAGE_ORDER)]
        root = workdir / f"trial-{trial:02d}-{name}"
        root.mkdir()
        _write_cfg(root)
        for upstream in STAGE_ORDER[: STAGE_ORDER.index(name)]:
            shutil.copytree(reference / ref_folders[upstream], root / ref_folders[upstream])
        _configure(root, set_option)
        staging = identity.staging_path(_stages()[name].output_dir())
        delay = rng.uniform(0.0, 1.1 * build_seconds[name])

        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.Popen(
            [str(BIN / "luigi"), "--module", "pipeline", name, "--local-scheduler"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started = staging / paths.EVENTS if name == "TrainEstimator" else staging
        deadline = time.monotonic() + 120
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        finished_first = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        step_at_kill = _last_checkpoint_step(staging)

        problems = incomplete_publications(root)
        if problems:
            raise AssertionError(f"trial {trial} ({name}): {problems}")
        stage = _stages()[name]
        complete_after_kill = stage.complete()
        result = luigi.build([stage], local_scheduler=True, detailed_summary=True)
        if result.status != luigi.LuigiStatusCode.SUCCESS:
            raise AssertionError(f"trial {trial} ({name}): rerun failed\n{result.summary_text}")
        got = _fingerprint(stage)
        if got != ref[name]:
            differ = sorted(f for f in set(got) | set(ref[name]) if got.get(f) != ref[name].get(f))
            raise AssertionError(
                f"trial {trial} ({name}, killed after {delay:.2f} s, checkpoint {step_at_kill}): "
                f"{differ} differ from the uninterrupted run ({root})"
            )
        marker = identity.read_marker(stage.output_dir())
        assert marker is not None
        resumed = marker["info"].get("resumed_from_step")
        if name == "TrainEstimator" and not complete_after_kill and resumed != step_at_kill:
            raise AssertionError(f"trial {trial}: resumed from {resumed}, last checkpoint was {step_at_kill}")
        records.append(
            {
                "trial": trial,
                "stage": name,
                "kill_after_s": round(delay, 3),
                "finished_before_kill": finished_first,
                "complete_after_kill": complete_after_kill,
                "checkpoint_at_kill": step_at_kill if name == "TrainEstimator" else None,
                "resumed_from_step": resumed,
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed) for inspection")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="crash-trials-"))
    try:
        started = time.monotonic()
        records = run_trials(tmp, args.trials, args.seed)
        elapsed = time.monotonic() - started
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(records)} SIGKILL trials, seed {args.seed}, {elapsed:.0f} s: all invariants held")
    print(f"{'trial':>5} {'stage':<18} {'kill after':>10} {'done first':>10} {'ckpt@kill':>9} {'resumed':>7}")
    for r in records:
        ckpt = "" if r["checkpoint_at_kill"] is None else r["checkpoint_at_kill"]
        resumed = "" if r["resumed_from_step"] is None else r["resumed_from_step"]
        print(
            f"{r['trial']:>5} {r['stage']:<18} {r['kill_after_s']:>9.3f}s {r['finished_before_kill']!s:>10}"
            f" {ckpt!s:>9} {resumed!s:>7}"
        )


if __name__ == "__main__":
    main()
