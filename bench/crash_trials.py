"""Crash in every phase: SIGKILL stages at moments drawn inside each phase of their work, then check and rerun.

The phases are the stages' own (`pipeline/runtime/phases.py`): the ETL writing shards,
training between checkpoints, a checkpoint save, the export, between the
marker and the publishing rename, evaluation and plotting. An uninterrupted
reference run (each stage a `luigi` process of its own, as in the trials) logs
when each occurrence of each phase began and ended. Trial `i` targets phase
`i mod 7`: it draws a stage that has the phase, one of the phase's occurrences
and a moment inside it (uniform over the first half of the reference's
duration: the same phase may be twice as quick in a trial when the machine's
load changes, and a timer that fires a little late then still lands inside it;
windows under 5 ms are hit at their start), copies the outputs above the stage from the reference, and starts
`luigi --module pipeline <Stage>` with `PIPELINE_CRASH_AT`, so that the stage
SIGKILLs itself at that moment. The phase a trial counts for is the one its
phase log shows open at the kill, not the one aimed at. Then:

1. no published folder is incomplete: every folder outside `.partial` has a
   valid marker and all its files at their recorded sizes;
2. the stage reruns to completion (in this process);
3. its output equals the reference run's: the same file names (TensorBoard's
   event files aside, which carry the host and the time in their names) and
   the same bytes (for training, of the final checkpoint and the history: the
   same weights and optimizer state; the exports are zips with timestamps);
4. training resumes from the last checkpoint on disk at the kill, losing at most
   one checkpoint interval; a stage killed between its marker and the rename
   publishes the staging folder as it is.

Its last line is `trials=T violations=V phases=etl:a,train:b,...`: the trials
run, the broken invariants, and the trials whose kill landed in each phase.

    .venv/bin/python -m bench.crash_trials [--trials 50] [--seed 0] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import luigi
from luigi.task_register import Register

import pipeline
from pipeline import layout, paths
from pipeline.core import markers, publish
from pipeline.core.stage import Stage, dag
from pipeline.runtime import phases

BIN = Path(sys.executable).parent
CHECKPOINT_STEPS = 200
MAX_STEPS = 1000
SMALL_CFG = {
    "paths": {"root": "."},
    "TrainEstimator": {"max_steps": str(MAX_STEPS), "checkpoint_steps": str(CHECKPOINT_STEPS), "batch_size": "64"},
}
STAGE_ORDER = ["CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"]
# The stages in which each phase happens.
PHASE_STAGES = {
    "etl": ["CreateShards"],
    "train": ["TrainEstimator"],
    "checkpoint": ["TrainEstimator"],
    "export": ["TrainEstimator"],
    "publish": STAGE_ORDER,
    "evaluate": ["EvaluateEstimator"],
    "plot": ["PlotInference"],
}
# Below this delay the stage kills itself at once on entering the phase: a timer
# thread cannot be trusted to wake up that precisely (the GIL switches every 5 ms).
TIMER_RESOLUTION = 0.005
KILL_TIMEOUT = 300.0

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


# One line of a phase log (pipeline/runtime/phases.py): (begin|end, phase, occurrence, seconds since the epoch).
LogEntry = tuple[str, str, int, float]


def read_log(path: str) -> list[LogEntry]:
    """The lines of a phase log as (begin|end, phase, occurrence, time)."""
    entries = []
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:  # a line cut by the kill is not one
                entries.append((parts[0], parts[1], int(parts[2]), float(parts[3])))
    return entries


def open_phase(entries: list[LogEntry]) -> tuple[str, int] | None:
    """The innermost phase (name, occurrence) begun and not ended in a log: where a kill landed."""
    stack: list[tuple[str, int]] = []
    for kind, name, occurrence, _ in entries:
        if kind == "begin":
            stack.append((name, occurrence))
        elif (name, occurrence) in stack:
            stack.remove((name, occurrence))
    return stack[-1] if stack else None


def durations(entries: list[LogEntry]) -> dict[tuple[str, int], float]:
    """Seconds each (phase, occurrence) took, from a complete log."""
    began = {(name, occ): t for kind, name, occ, t in entries if kind == "begin"}
    return {
        (name, occ): t - began[name, occ] for kind, name, occ, t in entries if kind == "end" and (name, occ) in began
    }


def _stages() -> dict[str, Stage]:
    return {stage.task_family: stage for stage in dag(pipeline.PlotInference())}


def incomplete_publications(root: Path) -> list[str]:
    """Published folders (not staging) below the artifact root `root` whose marker is missing or whose
    files are not all there."""
    parents = [parent for kind, parent in paths.stage_parents(root).items() if kind != "raw"]  # as paths.stage_folders
    folders = sorted(p for parent in parents if parent.is_dir() for p in parent.iterdir() if p.is_dir())
    problems = []
    for folder in folders:
        if folder.name.endswith(".partial") or ".old-" in folder.name:
            continue
        marker = markers.read_marker(folder)
        if marker is None:
            problems.append(f"{folder}: no valid marker")
            continue
        for rel, rec in marker["files"].items():
            path = folder / rel
            if not path.is_file() or path.stat().st_size != rec["size"]:
                problems.append(f"{folder}: {rel} missing or short")
    return problems


def _fingerprint(stage: Stage) -> dict[str, str]:
    """What must equal the reference: file names and digests (training: its final checkpoint and history)."""
    marker = markers.read_marker(stage.output_dir())
    assert marker is not None
    files = marker["files"]
    names = {f: "present" for f in files if not f.startswith(layout.EVENTS + "/")}
    if stage.task_family == "TrainEstimator":
        steps = [int(m[1]) for f in files if (m := re.fullmatch(r"checkpoints/ckpt-(\d+)\.index", f))]
        step = f"checkpoints/ckpt-{max(steps)}."
        return {**names, **{f: r["sha256"] for f, r in files.items() if f.startswith(step) or f == layout.HISTORY}}
    return {**names, **{f: r["sha256"] for f, r in files.items()}}


def _last_checkpoint_step(staging: Path) -> int:
    state = staging / layout.CHECKPOINTS / "checkpoint"
    try:
        text = state.read_text()
    except OSError:
        return 0
    return int(text.split("ckpt-")[1].split('"')[0]) if "ckpt-" in text else 0


def _luigi(name: str, root: Path, **env: str) -> int:
    """`luigi --module pipeline <name> --local-scheduler` in `root`, with `env` added; its exit code.

    Its output goes to `root/luigi.log`, a file rather than a pipe: processes a killed
    stage leaves behind (its shard writers' forkserver) would hold a pipe open.
    """
    with open(root / "luigi.log", "ab") as log:
        return subprocess.run(
            [str(BIN / "luigi"), "--module", "pipeline", name, "--local-scheduler", "--no-lock"],
            cwd=root, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env),
            stdout=log, stderr=subprocess.STDOUT, timeout=KILL_TIMEOUT,
        ).returncode  # fmt: skip


def _reference(root: Path, set_option: SetOption) -> dict[str, dict[tuple[str, int], float]]:
    """Run the DAG uninterrupted, stage by stage, each in a `luigi` process of its own as the
    trials do (so the phases take as long as they will there); return each stage's phase durations."""
    _write_cfg(root)
    _configure(root, set_option)
    timings = {}
    for name in STAGE_ORDER:
        log = root / f"phases-{name}.log"
        code = _luigi(name, root, **{phases.LOG_ENV: str(log)})
        assert code == 0, (root / "luigi.log").read_text()[-3000:]
        timings[name] = durations(read_log(str(log)))
    return timings


def _draw(
    rng: random.Random, target: str, timings: dict[str, dict[tuple[str, int], float]], within: float
) -> tuple[str, int, float]:
    """A stage that has phase `target`, one occurrence of it and a moment inside it (in its first `within`)."""
    name = rng.choice(PHASE_STAGES[target])
    occurrences = sorted(occ for phase, occ in timings[name] if phase == target)
    occurrence = rng.choice(occurrences)
    delay = rng.uniform(0.0, within * timings[name][target, occurrence])
    return name, occurrence, 0.0 if delay < TIMER_RESOLUTION else delay


def _trial(
    trial: int, root: Path, reference: Path, target: str, name: str, occurrence: int, delay: float,
    ref: dict[str, dict[str, str]], ref_folders: dict[str, Path], set_option: SetOption,
) -> dict[str, Any]:  # fmt: skip
    """One kill and its checks; the record lists the broken invariants (empty if none)."""
    root.mkdir()
    _write_cfg(root)
    for upstream in STAGE_ORDER[: STAGE_ORDER.index(name)]:
        shutil.copytree(reference / ref_folders[upstream], root / ref_folders[upstream])
    _configure(root, set_option)
    staging = publish.staging_path(_stages()[name].output_dir())
    log = root / "phases.log"
    code = _luigi(name, root, **{phases.LOG_ENV: str(log), phases.CRASH_ENV: f"{target}:{occurrence}:{delay:.6f}"})
    killed = code == -signal.SIGKILL
    landed = open_phase(read_log(str(log))) if killed else None
    step_at_kill = _last_checkpoint_step(staging)
    final = _stages()[name].output_dir()
    # Killed while publishing: the marker written last, in staging or (renamed already) in place.
    staged = markers.read_marker(staging) or markers.read_marker(final)
    record: dict[str, Any] = {
        "trial": trial, "stage": name, "target": f"{target}:{occurrence}", "delay_s": round(delay, 4),
        "landed": f"{landed[0]}:{landed[1]}" if landed else "(between phases)" if killed else "(finished first)",
        "phase": landed[0] if landed else None,
        "checkpoint_at_kill": step_at_kill if name == "TrainEstimator" else None, "resumed_from_step": None,
        "violations": [],
    }  # fmt: skip
    violations = record["violations"]
    violations += incomplete_publications(root)
    stage = _stages()[name]
    result = luigi.build([stage], local_scheduler=True, detailed_summary=True, log_level="WARNING")
    if result.status != luigi.LuigiStatusCode.SUCCESS:
        violations.append(f"the rerun failed: {result.summary_text}")
        return record
    got = _fingerprint(stage)
    if got != ref[name]:
        differ = sorted(f for f in set(got) | set(ref[name]) if got.get(f) != ref[name].get(f))
        violations.append(f"{differ} differ from the uninterrupted run")
    marker = markers.read_marker(stage.output_dir())
    assert marker is not None
    if landed and landed[0] == "publish":
        if staged is None or marker["run_id"] != staged["run_id"]:
            violations.append("killed while publishing, but what its marker described was not published as it was")
    elif name == "TrainEstimator" and killed:
        resumed = record["resumed_from_step"] = marker["info"].get("resumed_from_step")
        if resumed != step_at_kill:
            violations.append(f"resumed from step {resumed}, but the last checkpoint on disk was {step_at_kill}")
        if landed:  # how far training had got: inside epoch k (or its checkpoint), k intervals at most
            reached = MAX_STEPS if landed[0] == "export" else landed[1] * CHECKPOINT_STEPS
            if reached - resumed > CHECKPOINT_STEPS:
                violations.append(
                    f"killed at up to step {reached}, resumed from {resumed}: more than one interval lost"
                )
    return record


def run_trials(
    workdir: Path, trials: int, seed: int, set_option: SetOption | None = None, within: float = 0.5
) -> list[dict[str, Any]]:
    """Run the trials below `workdir`; return one record per trial, with the invariants each broke.

    `set_option(section, option, value)` changes this process's Luigi config
    (default: set it directly; tests pass one that is undone after). Kill
    moments are drawn in the first `within` (a fraction) of each phase's
    duration in the reference run: a phase may take less time in a trial,
    and a late timer lands in the next phase.
    """
    set_option = set_option or luigi.configuration.get_config().set
    rng = random.Random(seed)
    reference = workdir / "reference"
    reference.mkdir(parents=True)
    timings = _reference(reference, set_option)
    ref_stages = _stages()
    ref = {name: _fingerprint(stage) for name, stage in ref_stages.items()}
    ref_folders = {name: stage.output_dir().relative_to(reference) for name, stage in ref_stages.items()}
    records = []
    for trial in range(trials):
        target = phases.PHASES[trial % len(phases.PHASES)]
        name, occurrence, delay = _draw(rng, target, timings, within)
        root = workdir / f"trial-{trial:02d}-{target}"
        records.append(_trial(trial, root, reference, target, name, occurrence, delay, ref, ref_folders, set_option))
    return records


def summary_line(records: list[dict[str, Any]]) -> str:
    """`trials=T violations=V phases=etl:a,...`: the trials, the broken invariants, the kills per phase."""
    hits = Counter(r["phase"] for r in records)
    violations = sum(len(r["violations"]) for r in records)
    counts = ",".join(f"{phase}:{hits[phase]}" for phase in phases.PHASES)
    return f"trials={len(records)} violations={violations} phases={counts}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed) for inspection")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="crash-trials-"))
    try:
        started = time.monotonic()
        records = run_trials(tmp, args.trials, args.seed)
        elapsed = time.monotonic() - started
    finally:
        if args.keep:
            print(f"work folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(records)} SIGKILL trials, seed {args.seed}, {elapsed:.0f} s, load average {os.getloadavg()[0]:.2f}")
    print(f"{'trial':>5} {'stage':<18} {'aimed at':<14} {'delay':>8} {'landed in':<17} {'ckpt@kill':>9} {'resumed':>7}")
    for r in records:
        ckpt = "" if r["checkpoint_at_kill"] is None else r["checkpoint_at_kill"]
        resumed = "" if r["resumed_from_step"] is None else r["resumed_from_step"]
        print(
            f"{r['trial']:>5} {r['stage']:<18} {r['target']:<14} {r['delay_s']:>7.4f}s {r['landed']:<17}"
            f" {ckpt!s:>9} {resumed!s:>7}"
        )
        for violation in r["violations"]:
            print(f"      VIOLATION: {violation}")
    print(summary_line(records))


if __name__ == "__main__":
    main()
