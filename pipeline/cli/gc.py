"""`python -m pipeline gc`: what the artifact root holds besides the current outputs, and removing it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from luigi.cmdline_parser import CmdlineParser

from pipeline import paths
from pipeline.cli import cleanup, interface, remote_gc
from pipeline.core import markers, publish
from pipeline.core import remote as remotes
from pipeline.core.stage import dag
from pipeline.errors import ParameterError

USAGE = (
    "python -m pipeline gc [--yes] [--unused (--older-than DAYS | --keep-last N)] [--remote] [TASK] "
    "[--<Task>-<param> VALUE ...]"
)
DESCRIPTION = """\
Lists what the artifact root holds besides the outputs of TASK's DAG (default PlotInference)
in the current configuration (the parameters are luigi's: `luigi --module pipeline TASK
--help` lists them). Removes, with --yes: the leftovers (staging folders of crashed or
failed stages, copies moved aside, orphaned locks); with --unused also complete results of
other configurations, those older than DAYS days and/or all but the newest N of each stage;
with --remote the same in the configured remote. Raw data under data/raw is never touched,
nor anything outside the artifact root: a folder that is a link is removed as a link, its
target never."""


def _count(convert: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number that is not negative."""

    def parse(text: str) -> float:
        try:
            number = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a number. Received: {text!r}") from None
        if number < 0:
            raise argparse.ArgumentTypeError(f"must not be negative. Received: {text}")
        return number

    return parse


def parser() -> interface.Arguments:
    """The command's options (its --help); TASK and the parameters after them are Luigi's."""
    arguments = interface.Arguments("python -m pipeline gc", DESCRIPTION, usage=USAGE)
    arguments.add_argument("--yes", action="store_true", help="Remove what is listed (without it: only list).")
    arguments.add_argument("--unused", action="store_true", help="Also complete results of other configurations.")
    arguments.add_argument(
        "--older-than", type=_count(float), metavar="DAYS", help="With --unused: made more than DAYS days ago."
    )
    arguments.add_argument(
        "--keep-last", type=_count(int), metavar="N", help="With --unused: all but the newest N of each stage."
    )
    arguments.add_argument("--remote", action="store_true", help="The same rules in the configured remote too.")
    return arguments


def main(argv: list[str]) -> int:
    """List (and with --yes remove) leftovers, and with --unused results of other configurations."""
    # Our options wherever they are; TASK and its --<Task>-<param> VALUE pairs, in order, for Luigi's parser.
    args, argv = parser().parse_known_args(argv)
    remove, unused, on_remote = args.yes, args.unused, args.remote
    older_than, keep_last = args.older_than, args.keep_last
    if unused and older_than is None and keep_last is None:
        raise ParameterError(
            "gc --unused removes complete results of other configurations: say which, with --older-than DAYS "
            "(made more than DAYS days ago) or --keep-last N (all but the newest N of each stage), or both."
        )
    if not unused and (older_than is not None or keep_last is not None):
        raise ParameterError("gc --older-than and --keep-last choose among results: add --unused.")
    if not argv or argv[0].startswith("-"):
        argv = ["PlotInference", *argv]
    with CmdlineParser.global_instance(argv) as command_line:
        stages = dag(command_line.get_task_obj())
        current = {s.task_family: {"folder": s.output_dir(), "identity": s.identity().as_dict()} for s in stages}
        # Staging folders the next run of this configuration takes up: training's checkpoints, or a
        # complete one that a stopped run did not get to publish.
        resumable = {
            staging
            for s in stages
            if (staging := publish.staging_path(s.output_dir())).is_dir()
            and (s.resumable or markers.read_marker(staging) is not None)
        }
    root = paths.root()
    print(f"Artifact root: {root}")
    entries = cleanup.scan(current, resumable)
    chosen = cleanup.select(entries, unused, older_than, None if keep_last is None else int(keep_last))
    _show(entries, chosen, root, remove, unused, f"not used by {argv[0]}'s DAG", lambda e: cleanup.remove(e, root))
    if on_remote:  # only with --remote: the same rules, in the bucket
        remote = remotes.configured()
        if remote is None:
            raise ParameterError("gc --remote: no remote is configured. Set [paths] remote or --paths-remote.")
        print(f"\nRemote: {remote.url} at {remote.endpoint}")
        entries = remote_gc.scan(remote, current)
        chosen = cleanup.select(entries, unused, older_than, None if keep_last is None else int(keep_last))
        _show(entries, chosen, root, remove, unused, "from the remote", lambda e: remote_gc.remove(remote, e))
    if not remove:
        print("Run again with --yes to remove them.")
    return 0


def _show(
    entries: list[cleanup.Entry],
    chosen: list[cleanup.Entry],
    root: Path,
    remove: bool,
    unused: bool,
    what: str,
    remover: Callable[[cleanup.Entry], bool],
) -> None:
    """Print what is kept and what goes (`what`); with `remove`, remove it."""
    kept = [entry for entry in entries if entry not in chosen]
    if kept:
        print(f"Kept ({len(kept)}):")
        for entry in kept:
            print(entry.describe(root))
        if not unused and any(entry.kind in cleanup.RESULT_KINDS for entry in kept):
            print("  (results of other configurations go only with --unused and --older-than DAYS or --keep-last N)")
    if not chosen:
        print(f"Nothing to remove: no leftovers{' and no result chosen' if unused else ''}.")
        return
    total = cleanup.human_size(sum(entry.size for entry in chosen))
    print(f"{'Removing' if remove else 'Would remove'} {len(chosen)} ({total}), {what}:")
    for entry in chosen:
        print(entry.describe(root))
        if remove:
            try:
                if not remover(entry):
                    print("      (left: a run took it meanwhile)")
            except ValueError as error:  # outside the artifact root, whatever a marker or link says
                print(f"      not removed: {error}")
