"""`python -m pipeline runs`: the runs table of every trained model under the artifact root."""

from __future__ import annotations

from pipeline import paths
from pipeline.cli import interface

DESCRIPTION = """\
One row per trained model under the artifact root: its name (--name of the run), the
parameters that differ between the rows (--all: every parameter), the headline validation
metrics, when it finished and the seconds per stage. A run that a search trained or reused
has its trial's number, state (complete, reused) and objective too (--search NAME: only the
runs of that study). Runs are shown in one table per data set and problem (sine, an image
folder, a table), with the columns that differ inside it."""

EPILOG = """\
examples:
  python -m pipeline runs --where source=sine
  python -m pipeline runs --where TrainEstimator.learning_rate<0.01 --where validation.mse<0.02
  python -m pipeline runs --where name=baseline --sort-by mse
  python -m pipeline runs --search sine-mlp-search-0123456789ab --sort-by objective"""


def parser() -> interface.Arguments:
    """The command's options (its --help)."""
    arguments = interface.Arguments("python -m pipeline runs", DESCRIPTION, EPILOG)
    arguments.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY OP VALUE",
        help="Only the runs for which it holds: a parameter (Stage.name or name), a metric or name; "
        "OP one of = != < <= > >=. Repeat it: all must hold.",
    )
    arguments.add_argument(
        "--search", metavar="NAME", help="Only the runs of this search's study (its folder under searches/)."
    )
    arguments.add_argument("--sort-by", metavar="COLUMN", help="Order the rows by this column (key or header).")
    arguments.add_argument("--reverse", action="store_true", help="Reverse the order.")
    arguments.add_argument(
        "--all", action="store_true", dest="all_params", help="Every parameter, not only those that differ."
    )
    output = arguments.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="Every run as JSON (all parameters, metrics, folders).")
    output.add_argument("--csv", action="store_true", help="The table as CSV, one table for all runs.")
    return arguments


def main(argv: list[str]) -> int:
    """Print the runs table (or JSON, or CSV) of the trained models under the artifact root."""
    from pipeline.experiments import runs, selection

    args = parser().parse_args(argv)
    conditions = [selection.parse(text) for text in args.where]
    found = runs.collect(paths.root(), args.search)
    chosen = selection.where(found, conditions) if conditions and found else found
    if args.json:
        print(runs.to_json(chosen, args.sort_by, args.reverse))
    elif args.csv:
        print(runs.to_csv(chosen, args.sort_by, args.all_params, reverse=args.reverse), end="")
    elif not found:
        of = f" of the search {args.search}" if args.search else ""
        print(f"No trained models{of} under {paths.artifact_root('models').resolve()}.")
    elif not chosen:
        print(f"No run of the {len(found)} under {paths.root()} has {' and '.join(args.where)}.")
    else:
        tables = []
        for data_set, members in selection.groups(chosen):
            table = runs.format_table(members, args.sort_by, args.all_params, reverse=args.reverse)
            tables.append(f"{data_set} ({len(members)} run{'s' if len(members) > 1 else ''}):\n{table}")
        print("\n\n".join(tables))
    return 0
