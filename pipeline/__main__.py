"""Helper commands: `python -m pipeline status|gc|worker|runs|diff|report|sweep|doctor ...`.

None imports TensorFlow but doctor (and the trainings a sweep runs).

status TASK [--Task-param value ...]
    Every stage of TASK's DAG as up to date or stale, with the reason, and
    where its output is. Takes the same parameters as `luigi --module pipeline`.
    Exits with 0 when every stage is up to date, 1 when one is stale.
worker [--Task-param value ...]
    Join a multi-host training as a worker other than the chief: with
    TF_CONFIG naming this process, on a host that sees the artifact root.
    The chief runs `luigi --module pipeline TrainEstimator` (or any stage
    below it) with the same parameters and its own TF_CONFIG.
gc [--yes] [--unused (--older-than DAYS | --keep-last N)] [TASK] [--Task-param value ...]
    Lists what the artifact root holds besides the outputs of TASK's DAG
    (default PlotInference) in the current configuration. Removes, with --yes:
    the leftovers (staging folders of crashed or failed stages, copies moved
    aside, orphaned locks); with --unused also complete results of other
    configurations, those older than DAYS days and/or all but the newest N
    of each stage. Raw data under data/raw is never touched, nor anything
    outside the artifact root: a folder that is a link is removed as a link,
    its target never (pipeline/containment.py).

runs [--sort-by COLUMN] [--reverse] [--all] [--json | --csv]
    One row per trained model under the artifact root: the parameters that
    differ between the rows (--all: every parameter), the headline
    validation metrics, when it finished, seconds per stage, its folder.
diff A B
    What differs between two outputs (model folders, folder names or
    identity prefixes): parameters, code files, versions, upstream data.
report [RUN ...] [--out FILE]
    One self-contained HTML page of the runs (default: all): the table,
    the training curves overlaid, each metric against each parameter that
    differs, and each run's figures. Default FILE: reports/runs.html.
sweep TASK --Task-param A,B [--Task-param C,D ...] [--workers N] [luigi flags]
    Every combination of the listed values, down to TASK, in one Luigi
    invocation (a value with top-level commas is several values; [64],[128]
    is two lists). Stages the variants share run once. Ends with Luigi's
    summary, the table of the sweep's runs and the path of their report.
doctor
    What TensorFlow sees (devices, CUDA/cuDNN build, mixed precision), the
    GPU slots of this host, the resource pools and the scheduler.

A mistake (an unknown task, command or parameter, a value not accepted) is one
line naming it and what is meant, exit code 40.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import luigi
from luigi.cmdline_parser import CmdlineParser

import pipeline  # noqa: F401 (registers the tasks and the project's luigi.cfg)
from pipeline import cleanup, cli, cluster, identity, image_folder, listing, paths
from pipeline.errors import DataError, ParameterError
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


def source_notes(stage: Stage) -> list[str]:
    """What `stage` leaves out: files of its source folders that are not images of a class (now),
    and unreadable files its output skipped (`--CreateShards-skip-unreadable`)."""
    folders = [folder for folder in stage.source_folders().values() if folder.is_dir()]  # not a table's file
    notes = [image_folder.describe_ignored(listing.of(folder)) for folder in folders]
    marker = identity.read_marker(stage.output_dir())
    skipped = marker["info"].get("skipped_unreadable", 0) if marker else 0
    if skipped:
        notes.append(
            f"{skipped} unreadable file(s) skipped (--CreateShards-skip-unreadable); "
            f"{stage.output_dir() / paths.MANIFEST} lists them"
        )
    return [note for note in notes if note]


def status(argv: list[str]) -> int:
    """Print every stage of a DAG as up to date or stale, with reasons; 0 if all are up to date, else 1."""
    # Upstream tasks read the command line's --Task-param values while the
    # parser is the global instance: the whole walk happens inside it.
    stale = False
    with CmdlineParser.global_instance(argv) as parser:
        stages = dag(parser.get_task_obj())
        print(f"Artifact root: {paths.root()}")
        width = max(len(s.task_family) for s in stages)
        for stage in stages:
            reasons = explain(stage)
            stale = stale or bool(reasons)
            state = "stale" if reasons else "up to date"
            print(f"{stage.task_family:<{width}}  {state:<10}  {stage.output_dir()}")
            for reason in reasons:
                print(f"{'':<{width}}    - {reason}")
            for note in source_notes(stage):
                print(f"{'':<{width}}    note: {note}")
            if not reasons and stage.artifact_kind == "reports":  # where the results are
                for rel in identity.list_files(stage.output_dir()):
                    print(f"{'':<{width}}    {stage.output_dir() / rel}")
    return 1 if stale else 0


def _option(argv: list[str], name: str, convert: Callable[[str], float]) -> tuple[float | None, list[str]]:
    """Take `name VALUE` (or `name=VALUE`) out of argv; the value converted, or None when absent."""
    for i, word in enumerate(argv):
        if word == name or word.startswith(name + "="):
            value = word.split("=", 1)[1] if "=" in word else (argv[i + 1] if i + 1 < len(argv) else "")
            rest = argv[:i] + argv[i + (1 if "=" in word else 2) :]
            try:
                number = convert(value)
            except ValueError:
                raise ParameterError(f"gc {name} takes a number. Received: {value!r}") from None
            if number < 0:
                raise ParameterError(f"gc {name} must not be negative. Received: {value}")
            return number, rest
    return None, argv


def gc(argv: list[str]) -> int:
    """List (and with --yes remove) leftovers, and with --unused results of other configurations."""
    remove, unused = "--yes" in argv, "--unused" in argv
    argv = [a for a in argv if a not in ("--yes", "--unused")]
    older_than, argv = _option(argv, "--older-than", float)
    keep_last, argv = _option(argv, "--keep-last", int)
    if unused and older_than is None and keep_last is None:
        raise ParameterError(
            "gc --unused removes complete results of other configurations: say which, with --older-than DAYS "
            "(made more than DAYS days ago) or --keep-last N (all but the newest N of each stage), or both."
        )
    if not unused and (older_than is not None or keep_last is not None):
        raise ParameterError("gc --older-than and --keep-last choose among results: add --unused.")
    if not argv or argv[0].startswith("-"):
        argv = ["PlotInference", *argv]
    with CmdlineParser.global_instance(argv) as parser:
        stages = dag(parser.get_task_obj())
        current = {s.task_family: {"folder": s.output_dir(), "identity": s.identity().as_dict()} for s in stages}
        # Staging folders the next run of this configuration takes up: training's checkpoints, or a
        # complete one that a stopped run did not get to publish.
        resumable = {
            staging
            for s in stages
            if (staging := identity.staging_path(s.output_dir())).is_dir()
            and (s.resumable or identity.read_marker(staging) is not None)
        }
    root = paths.root()
    entries = cleanup.scan(current, resumable)
    chosen = cleanup.select(entries, unused, older_than, None if keep_last is None else int(keep_last))
    print(f"Artifact root: {root}")
    kept = [entry for entry in entries if entry not in chosen]
    if kept:
        print(f"Kept ({len(kept)}):")
        for entry in kept:
            print(entry.describe(root))
        if not unused and any(entry.kind in cleanup.RESULT_KINDS for entry in kept):
            print("  (results of other configurations go only with --unused and --older-than DAYS or --keep-last N)")
    if not chosen:
        print(f"Nothing to remove: no leftovers{' and no result chosen' if unused else ''}.")
        return 0
    total = cleanup.human_size(sum(entry.size for entry in chosen))
    print(f"{'Removing' if remove else 'Would remove'} {len(chosen)} ({total}), not used by {argv[0]}'s DAG:")
    for entry in chosen:
        print(entry.describe(root))
        if remove:
            try:
                if not cleanup.remove(entry, root):
                    print("      (left: a run took it meanwhile)")
            except ValueError as error:  # outside the artifact root, whatever a marker or link says
                print(f"      not removed: {error}")
    if not remove:
        print("Run again with --yes to remove them.")
    return 0


def worker(argv: list[str], wait_seconds: float = 600) -> int:
    """Train as a non-chief worker of TrainEstimator's multi-worker run."""
    role = cluster.role()
    if role.chief or role.num_workers < 2:
        raise ParameterError(
            "python -m pipeline worker is for the workers other than the chief of a multi-host training: "
            'set TF_CONFIG, e.g. {"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
            '"task": {"type": "worker", "index": 1}}. The chief (index 0) runs '
            "luigi --module pipeline TrainEstimator with its own TF_CONFIG."
        )
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


class _Arguments(argparse.ArgumentParser):
    """argparse whose mistakes are one line (raised as ParameterError, exit code 40), not usage and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise ParameterError(f"{self.prog}: {message}. Usage: {' '.join(self.format_usage().split()[1:])}")


def runs_command(argv: list[str]) -> int:
    """Print the runs table (or JSON, or CSV) of every trained model under the artifact root."""
    from pipeline import runs

    parser = _Arguments(prog="python -m pipeline runs", add_help=False)
    parser.add_argument("--sort-by", metavar="COLUMN")
    parser.add_argument("--reverse", action="store_true")
    parser.add_argument("--all", action="store_true", dest="all_params")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true")
    args = parser.parse_args(argv)
    found = runs.collect(paths.root())
    if args.json:
        print(runs.to_json(found, args.sort_by, args.reverse))
    elif args.csv:
        print(runs.to_csv(found, args.sort_by, args.all_params, reverse=args.reverse), end="")
    elif not found:
        print(f"No trained models under {paths.artifact_root('models').resolve()}.")
    else:
        print(runs.format_table(found, args.sort_by, args.all_params, reverse=args.reverse))
    return 0


def diff_command(argv: list[str]) -> int:
    """Print what differs between two published outputs."""
    from pipeline import diff, runs

    parser = _Arguments(prog="python -m pipeline diff", add_help=False)
    parser.add_argument("a", metavar="A")
    parser.add_argument("b", metavar="B")
    args = parser.parse_args(argv)
    index = runs.index(paths.root())
    print("\n".join(diff.diff(index, index.find(args.a), index.find(args.b))))
    return 0


def report_command(argv: list[str]) -> int:
    """Write the HTML report of the runs named (default: all) and print where it is."""
    from pipeline import runs

    parser = _Arguments(prog="python -m pipeline report", add_help=False)
    parser.add_argument("runs", nargs="*", metavar="RUN")
    parser.add_argument("--out", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    found = runs.collect(paths.root())
    chosen = runs.select(found, args.runs) if args.runs else found
    if not chosen:  # no RUN given and an empty root (a RUN that names nothing is select's error)
        raise DataError(f"No trained models under {paths.artifact_root('models').resolve()}: nothing to report.")
    from pipeline import report  # Matplotlib: only now

    out = args.out or paths.artifact_root("reports") / paths.RUNS_REPORT
    print(report.write_report(chosen, out).resolve())
    return 0


def sweep_command(argv: list[str]) -> int:
    """Run a grid of variants, then print their table and write their report."""
    from luigi.retcodes import retcode

    from pipeline import runs, sweep

    outcome = sweep.run(argv)
    status = outcome.result.status
    codes = retcode()
    code = {
        luigi.LuigiStatusCode.SUCCESS: 0,
        luigi.LuigiStatusCode.SUCCESS_WITH_RETRY: 0,
        luigi.LuigiStatusCode.FAILED: codes.task_failed,
        luigi.LuigiStatusCode.FAILED_AND_SCHEDULING_FAILED: codes.task_failed,
        luigi.LuigiStatusCode.SCHEDULING_FAILED: codes.scheduling_error,
        luigi.LuigiStatusCode.NOT_RUN: codes.not_run,
        luigi.LuigiStatusCode.MISSING_EXT: codes.missing_data,
    }.get(status, codes.unhandled_exception)
    if not outcome.model_dirs:  # the target is above training: no runs to show
        return code
    by_name = {run.name: run for run in runs.collect(paths.root())}
    chosen = [by_name[folder.name] for folder in outcome.model_dirs if folder.name in by_name]  # in grid order
    if not chosen:
        return code
    swept = [axis.flag for axis in outcome.axes]
    print(runs.format_table(chosen, swept=swept))
    from pipeline import report  # Matplotlib: only now

    names = "".join(sorted(run.identity[:12] for run in chosen))
    out = paths.artifact_root("reports") / f"sweep-{identity.digest(names)[:12]}.html"
    print(f"\nReport of these {len(chosen)} runs: {report.write_report(chosen, out, swept).resolve()}")
    if len(chosen) < len(outcome.model_dirs):
        print(f"{len(outcome.model_dirs) - len(chosen)} variant(s) did not finish training: see Luigi's summary.")
    return code


def doctor_command(argv: list[str]) -> int:
    """Print what TensorFlow sees, the GPU slots, the resource pools and the scheduler."""
    _Arguments(prog="python -m pipeline doctor", add_help=False).parse_args(argv)
    from pipeline import doctor

    print("\n".join(doctor.report()))
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "status": status,
    "gc": gc,
    "worker": worker,
    "runs": runs_command,
    "diff": diff_command,
    "report": report_command,
    "sweep": sweep_command,
    "doctor": doctor_command,
}


def main(argv: list[str]) -> int:
    """Run one helper command; a user's mistake prints one line and exits with 40 (cli.run_command)."""
    if argv and argv[0] in ("-h", "--help"):
        return cli.run_command(lambda: print(USAGE, flush=True) or 0)
    if not argv:
        return cli.usage_error("No command given.", None, list(COMMANDS))
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return cli.usage_error(f"Unknown command {command}.", command, list(COMMANDS))
    if command == "status" and not rest:
        return cli.usage_error("status needs a task, e.g. python -m pipeline status PlotInference.", None, [])
    return cli.run_command(lambda: COMMANDS[command](rest))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
