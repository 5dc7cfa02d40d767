"""`python -m pipeline gc`: what the artifact root holds besides the current outputs, and removing it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from luigi.cmdline_parser import CmdlineParser

from pipeline import paths
from pipeline.cli import cleanup, remote_gc
from pipeline.core import markers, publish
from pipeline.core import remote as remotes
from pipeline.core.stage import dag
from pipeline.errors import ParameterError


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
    remove, unused, on_remote = "--yes" in argv, "--unused" in argv, "--remote" in argv
    argv = [a for a in argv if a not in ("--yes", "--unused", "--remote")]
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
