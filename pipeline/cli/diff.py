"""`python -m pipeline diff A B`: what differs between two published outputs."""

from __future__ import annotations

from pipeline import paths
from pipeline.cli import interface

DESCRIPTION = """\
What differs between two outputs (model folders, folder names or identity prefixes):
parameters, code files, versions, source folders and upstream data, up the DAG; for two
models, their headline metrics side by side."""


def parser() -> interface.Arguments:
    """The command's options (its --help)."""
    arguments = interface.Arguments("python -m pipeline diff", DESCRIPTION)
    arguments.add_argument("a", metavar="A", help="A published folder, its name or 4+ hex digits of its identity.")
    arguments.add_argument("b", metavar="B", help="The other one.")
    return arguments


def main(argv: list[str]) -> int:
    """Print what differs between two published outputs."""
    from pipeline.experiments import diff, runs

    args = parser().parse_args(argv)
    index = runs.index(paths.root())
    print("\n".join(diff.diff(index, index.find(args.a), index.find(args.b))))
    return 0
