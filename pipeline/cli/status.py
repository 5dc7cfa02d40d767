"""`python -m pipeline status TASK`: every stage of TASK's DAG as up to date or stale, and why."""

from __future__ import annotations

import dataclasses

from luigi.cmdline_parser import CmdlineParser

from pipeline import layout, paths
from pipeline.cli import interface
from pipeline.core import identity, listing, markers
from pipeline.core import remote as remotes
from pipeline.core.stage import Stage, dag
from pipeline.errors import ParameterError
from pipeline.etl import image_folder

USAGE = "python -m pipeline status TASK [--<Task>-<param> VALUE ...]"
DESCRIPTION = """\
Every stage of TASK's DAG as up to date or stale, with the reason (no output yet, parameter
X changed from a to b, code of file F changed, upstream Y changed), and where its output is.
Takes the parameters `luigi --module pipeline TASK` takes (`luigi --module pipeline TASK
--help` lists them). Exits with 0 when every stage is up to date, 1 when one is stale.
Imports no TensorFlow."""


def previous_output(stage: Stage) -> dict | None:
    """The marker of the newest published output of the same stage under another identity."""
    folder = stage.output_dir()
    found = [
        markers.read_marker(candidate)
        for candidate in folder.parent.glob(f"{stage.folder_prefix()}-*")
        if candidate.is_dir() and candidate != folder
    ]
    same_stage = [m for m in found if m and m.get("stage") == stage.task_family]
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


def _users_files(found: listing.Listing) -> listing.Listing:
    """The listing without the marker of the stage that wrote the folder (MakeShapes' demo images):
    the pipeline's own file is no user's file that CreateShards ignores."""
    if markers.MARKER not in found.ignored or markers.read_marker(found.folder) is None:
        return found
    ignored = tuple(name for name in found.ignored if name != markers.MARKER)
    return dataclasses.replace(found, ignored=ignored, num_ignored=found.num_ignored - 1)


def source_notes(stage: Stage) -> list[str]:
    """What `stage` leaves out: files of its source folders that are not images of a class (now),
    and unreadable files its output skipped (`--CreateShards-skip-unreadable`)."""
    folders = [folder for name, folder in stage.source_folders().items() if name == "image_dir" and folder.is_dir()]
    notes = [image_folder.describe_ignored(_users_files(listing.of(folder))) for folder in folders]
    marker = markers.read_marker(stage.output_dir())
    skipped = marker["info"].get("skipped_unreadable", 0) if marker else 0
    if skipped:
        notes.append(
            f"{skipped} unreadable file(s) skipped (--CreateShards-skip-unreadable); "
            f"{stage.output_dir() / layout.MANIFEST} lists them"
        )
    kinds = marker["info"].get("columns", {}) if marker else {}  # a table's columns by kind
    if kinds:
        notes.append("columns: " + "; ".join(f"{kind} {', '.join(names)}" for kind, names in kinds.items() if names))
    unlabelled = marker["info"].get("unlabelled", 0) if marker else 0
    if unlabelled:
        notes.append(f"{unlabelled} row(s) with no label left out; {stage.output_dir() / layout.MANIFEST} lists them")
    verdict, export = (marker["info"].get(key) if marker else None for key in ("verdict", "export"))
    if isinstance(verdict, dict) and verdict.get("summary"):  # EvaluateEstimator's quality gate
        notes.append(f"verdict: {verdict['summary']}")
    if isinstance(export, dict) and export.get("path"):  # ExportModel
        notes.append(
            f"exported to {export['path']} (version {export.get('version')}"
            + (f", forced past the gate: {export.get('verdict')})" if export.get("forced") else ")")
        )
    return [note for note in notes if note]


def parser() -> interface.Arguments:
    """The command's help (the parameters after TASK are Luigi's, read by its parser)."""
    arguments = interface.Arguments("python -m pipeline status", DESCRIPTION, usage=USAGE)
    arguments.add_argument("task", metavar="TASK", help="The last stage of the DAG, e.g. PlotInference.")
    return arguments


def main(argv: list[str]) -> int:
    """Print every stage of a DAG as up to date or stale, with reasons; 0 if all are up to date, else 1."""
    if not argv or argv[0].startswith("-"):
        raise ParameterError(f"status needs a task first, e.g. python -m pipeline status PlotInference. Usage: {USAGE}")
    # Upstream tasks read the command line's --Task-param values while the
    # parser is the global instance: the whole walk happens inside it.
    stale = False
    with CmdlineParser.global_instance(argv) as parser:
        stages = dag(parser.get_task_obj())
        remote = remotes.configured()
        print(f"Artifact root: {paths.root()}" + (f", remote: {remote.url} at {remote.endpoint}" if remote else ""))
        width = max(len(s.task_family) for s in stages)
        for stage in stages:
            reasons = explain(stage)
            stale = stale or bool(reasons)
            state = "stale" if reasons else "up to date"
            if remote is not None and not reasons:  # where the output is: local, remote or both
                state += f" ({stage.location()})"
            print(f"{stage.task_family:<{width}}  {state:<10}  {stage.output_dir()}")
            for reason in reasons:
                print(f"{'':<{width}}    - {reason}")
            for note in source_notes(stage):
                print(f"{'':<{width}}    note: {note}")
            if not reasons and stage.artifact_kind == "reports":  # where the results are
                for rel in markers.list_files(stage.output_dir()):
                    print(f"{'':<{width}}    {stage.output_dir() / rel}")
    return 1 if stale else 0
