"""`python -m pipeline report`: one self-contained HTML page of the runs."""

from __future__ import annotations

from pathlib import Path

from pipeline import paths
from pipeline.cli import interface
from pipeline.core import remote as remotes
from pipeline.core import transfer
from pipeline.errors import DataError

DESCRIPTION = f"""\
One self-contained HTML page of the runs (default: all; RUN names one, --where chooses):
per data set and problem, the table, the training curves overlaid, each metric against
each parameter that differs, and each run's figures. Default FILE: reports/{paths.RUNS_REPORT}."""


def parser() -> interface.Arguments:
    """The command's options (its --help)."""
    arguments = interface.Arguments("python -m pipeline report", DESCRIPTION)
    arguments.add_argument(
        "runs", nargs="*", metavar="RUN", help="A model folder, its name or 4+ hex digits of its identity."
    )
    arguments.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY OP VALUE",
        help="Only the runs for which it holds (as for runs), e.g. source=sine. Repeat it: all must hold.",
    )
    arguments.add_argument("--out", type=Path, metavar="FILE", help="Where to write the page.")
    return arguments


def main(argv: list[str]) -> int:
    """Write the HTML report of the runs chosen (default: all) and print where it is."""
    from pipeline.experiments import runs, selection

    args = parser().parse_args(argv)
    found = runs.collect(paths.root())
    chosen = runs.select(found, args.runs) if args.runs else found
    if args.where and chosen:
        chosen = selection.where(chosen, [selection.parse(text) for text in args.where])
        if not chosen:
            raise DataError(f"No run under {paths.root()} has {' and '.join(args.where)}: nothing to report.")
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
