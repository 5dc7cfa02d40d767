"""`python -m pipeline runs|diff|report|sweep`: the experiment commands."""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline import paths
from pipeline.cli import interface
from pipeline.core import remote as remotes
from pipeline.core import transfer, values
from pipeline.errors import DataError


def runs_command(argv: list[str]) -> int:
    """Print the runs table (or JSON, or CSV) of every trained model under the artifact root."""
    from pipeline.experiments import runs

    parser = interface.Arguments(prog="python -m pipeline runs", add_help=False)
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
    from pipeline.experiments import diff, runs

    parser = interface.Arguments(prog="python -m pipeline diff", add_help=False)
    parser.add_argument("a", metavar="A")
    parser.add_argument("b", metavar="B")
    args = parser.parse_args(argv)
    index = runs.index(paths.root())
    print("\n".join(diff.diff(index, index.find(args.a), index.find(args.b))))
    return 0


def report_command(argv: list[str]) -> int:
    """Write the HTML report of the runs named (default: all) and print where it is."""
    from pipeline.experiments import runs

    parser = interface.Arguments(prog="python -m pipeline report", add_help=False)
    parser.add_argument("runs", nargs="*", metavar="RUN")
    parser.add_argument("--out", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    found = runs.collect(paths.root())
    chosen = runs.select(found, args.runs) if args.runs else found
    if not chosen:  # no RUN given and an empty root (a RUN that names nothing is select's error)
        raise DataError(f"No trained models under {paths.artifact_root('models').resolve()}: nothing to report.")
    remote = remotes.configured()
    if remote is not None:  # the figures of other hosts' runs: their reports are pulled (small)
        reports = paths.artifact_root("reports").resolve()
        for run in chosen:
            for artifact in run.downstream:
                if artifact.folder.parent == reports and not artifact.folder.is_dir():
                    transfer.pull_if_needed(remote, remote.root / artifact.folder.relative_to(reports.parent))
    from pipeline.experiments import report  # Matplotlib: only now

    out = args.out or paths.artifact_root("reports") / paths.RUNS_REPORT
    print(report.write_report(chosen, out).resolve())
    return 0


def sweep_command(argv: list[str]) -> int:
    """Run a grid of variants, then print their table and write their report."""
    from luigi.retcodes import retcode

    from pipeline.experiments import runs, sweep

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
    from pipeline.experiments import report  # Matplotlib: only now

    names = "".join(sorted(run.identity[:12] for run in chosen))
    out = paths.artifact_root("reports") / f"sweep-{values.digest(names)[:12]}.html"
    print(f"\nReport of these {len(chosen)} runs: {report.write_report(chosen, out, swept).resolve()}")
    if len(chosen) < len(outcome.model_dirs):
        print(f"{len(outcome.model_dirs) - len(chosen)} variant(s) did not finish training: see Luigi's summary.")
    return code
