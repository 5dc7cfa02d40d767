"""Helper commands: `python -m pipeline status|gc ...` (no TensorFlow import).

status TASK [--Task-param value ...]
    Every stage of TASK's DAG as up to date or stale, with the reason, and
    where its output is. Takes the same parameters as `luigi --module pipeline`.
worker [--Task-param value ...]
    Join a multi-host training as a worker other than the chief: with
    TF_CONFIG naming this process, on a host that sees the artifact root.
    The chief runs `luigi --module pipeline TrainEstimator` (or any stage
    below it) with the same parameters and its own TF_CONFIG.
gc [--yes] [TASK] [--Task-param value ...]
    Lists the artifact folders (shards, model dirs, reports) that TASK's DAG
    (default PlotInference) with the current configuration does not use, and
    removes them only with --yes. Raw data under data/raw is never touched, nor
    anything outside the artifact root: a folder that is a link is removed as a
    link, its target never (pipeline/containment.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from luigi.cmdline_parser import CmdlineParser

import pipeline  # noqa: F401 (registers the tasks and the project's luigi.cfg)
from pipeline import cluster, containment, identity, locks, paths
from pipeline.stage import Stage, dag

USAGE = __doc__ or ""


def previous_output(stage: Stage) -> dict | None:
    """The marker of the newest published output of the same stage under another identity."""
    folder = stage.output_dir()
    markers = [
        identity.read_marker(candidate)
        for candidate in folder.parent.glob(f"{stage.folder_prefix()}-*")
        if candidate.is_dir() and candidate != folder
    ]
    same_stage = [m for m in markers if m and m.get("stage") == stage.task_family]
    return max(same_stage, key=lambda m: m.get("created", 0), default=None)


def explain(stage: Stage) -> list[str]:
    """Why `stage` would run now ([] when it is up to date)."""
    reasons = []
    if stage.force:
        reasons.append("forced (--force)")
    own = stage.stale_reasons()
    if own == ["no output yet"]:
        old = previous_output(stage)
        if old is not None:
            own = identity.explain_change(old, stage.identity().as_dict()) or [
                "no output for this identity (the identity scheme changed since the last output)"
            ]
    return reasons + own


def status(argv: list[str]) -> int:
    """Print every stage of a DAG as up to date or stale, with reasons."""
    # Upstream tasks read the command line's --Task-param values while the
    # parser is the global instance: the whole walk happens inside it.
    with CmdlineParser.global_instance(argv) as parser:
        stages = dag(parser.get_task_obj())
        width = max(len(s.task_family) for s in stages)
        for stage in stages:
            reasons = explain(stage)
            state = "stale" if reasons else "up to date"
            print(f"{stage.task_family:<{width}}  {state:<10}  {stage.output_dir()}")
            for reason in reasons:
                print(f"{'':<{width}}    - {reason}")
            if not reasons and stage.artifact_kind == "reports":  # where the results are
                for rel in identity.list_files(stage.output_dir()):
                    print(f"{'':<{width}}    {stage.output_dir() / rel}")
    return 0


def gc(argv: list[str]) -> int:
    """List (and with --yes remove) artifact folders the current configuration does not reach."""
    remove = "--yes" in argv
    argv = [a for a in argv if a != "--yes"]
    if not argv or argv[0].startswith("-"):
        argv = ["PlotInference", *argv]
    with CmdlineParser.global_instance(argv) as parser:
        keep = set()
        for stage in dag(parser.get_task_obj()):
            keep |= {stage.output_dir(), identity.staging_path(stage.output_dir())}
    garbage = [folder for folder in paths.stage_folders() if folder not in keep]
    total = sum(containment.size(folder) for folder in garbage)
    if not garbage:
        print("Nothing to remove: every artifact folder is used by the current configuration.")
        return 0
    verb = "Removing" if remove else "Would remove"
    print(f"{verb} {len(garbage)} folder(s), {total / 1e6:.1f} MB, not used by {argv[0]}'s DAG:")
    root = Path(paths.paths().root)
    for folder in garbage:
        print(f"  {folder}")
        if remove:
            try:
                containment.remove(folder, root)
            except ValueError as error:
                print(f"    not removed: {error}")
            locks.remove_if_unused(paths.lock_path(folder))
    if not remove:
        print("Run again with --yes to remove them.")
    return 0


def worker(argv: list[str], wait_seconds: float = 600) -> int:
    """Train as a non-chief worker of TrainEstimator's multi-worker run."""
    role = cluster.role()
    if role.chief or role.num_workers < 2:
        print(
            "python -m pipeline worker is for the workers other than the chief of a multi-host training: "
            'set TF_CONFIG, e.g. {"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
            '"task": {"type": "worker", "index": 1}}. The chief (index 0) runs '
            "luigi --module pipeline TrainEstimator with its own TF_CONFIG.",
            file=sys.stderr,
        )
        return 2
    with CmdlineParser.global_instance(["TrainEstimator", *argv]) as parser:
        task = parser.get_task_obj()
        shards = task.requires()
        deadline = time.monotonic() + wait_seconds
        while not shards.complete():  # the chief's Luigi run builds them first
            if time.monotonic() > deadline:
                print(f"No shards at {shards.output_dir()} after {wait_seconds:.0f} s.", file=sys.stderr)
                return 1
            time.sleep(1.0)
        from pipeline import estimator

        model_dir = identity.staging_path(task.output_dir())  # where the chief trains
        config = task.settings()
        result = estimator.train(config, shards.output_dir(), model_dir)
    print(f"worker {role.index} of {result['workers']}: trained to step {config.max_steps} ({result['strategy']})")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "status" and rest:
        return status(rest)
    if command == "gc":
        return gc(rest)
    if command == "worker":
        return worker(rest)
    print(f"Unknown command or missing task: {' '.join(argv)}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
