"""`python -m pipeline sweep TASK --Task-param A,B ...`: a grid of variants, its table and its report."""

from __future__ import annotations

import luigi

from pipeline import paths
from pipeline.cli import interface
from pipeline.core import values

USAGE = "python -m pipeline sweep TASK --<Task>-<param> A,B [--<Task>-<param> C,D ...] [--workers N] [luigi options]"
DESCRIPTION = """\
Every combination of the listed values, down to TASK, in one Luigi invocation (a value with
top-level commas is several values; [64],[128] is two lists). Stages the variants share run
once. Ends with Luigi's summary, the table of the sweep's runs and the path of their report.
Every other option is luigi's (--local-scheduler, --workers N, --scheduler-port PORT,
--<Task>-<param> VALUE); `luigi --module pipeline TASK --help` lists the parameters."""


def parser() -> interface.Arguments:
    """The command's help (the arguments themselves are Luigi's, read by experiments.sweep.parse)."""
    arguments = interface.Arguments("python -m pipeline sweep", DESCRIPTION, usage=USAGE)
    arguments.add_argument("task", metavar="TASK", help="The last stage of each variant's DAG, e.g. PlotInference.")
    return arguments


def main(argv: list[str]) -> int:
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
