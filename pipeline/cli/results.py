"""What a `luigi` run of the pipeline says at its end, after Luigi's own summary.

`luigi` is Luigi's command, not ours: `install()` (called when `pipeline` is
imported) wraps the one function through which Luigi schedules and runs the
tasks of a command line, as pipeline/cli/scheduler.py wraps where Luigi makes its
remote scheduler. A run from the command line (`luigi --module pipeline ...`,
`make run`) then ends with a block that gives the absolute artifact root,
every stage of the target's DAG with its output folder and whether this run
made it or reused it, and the headline validation metrics. Programs calling
`luigi.build()` get Luigi's result object as before, and no block.

It also warns when `--<Task>-force` named a stage this run never checked
(Luigi does not look above a complete stage): `Repro` is the way to rerun it.

The `luigi` command then exits without the interpreter's teardown, its threads
and exit handlers done first (cli/exiting.py).

Two endings change the exit code. Ctrl-C or SIGTERM (cli/interruption.py):
the line saying where the stage stopped and how the same command goes on,
the block, exit 130. A run in which the scheduler ran nothing it was asked
to (Luigi's "not granted run permission", which Luigi exits 0 with): why,
for each stage the scheduler disabled after a failure (when it re-enables
it, or Re-enable in its web UI), exit `[retcode] task_failed`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

import luigi
import luigi.configuration
import luigi.interface
import luigi.retcodes
from luigi.task import flatten

from pipeline import layout, paths
from pipeline.cli import exiting, interruption
from pipeline.cli.scheduler import ReconnectingScheduler
from pipeline.core import invocation, markers, transfer
from pipeline.core import remote as remotes
from pipeline.core.stage import Stage, dag
from pipeline.errors import Interrupted

logger = logging.getLogger("luigi-interface")

# Task families the running command reached: the roots, the dependencies Luigi discovered
# below an incomplete stage, and those it found complete or missing (Luigi's events).
_checked: set[str] = set()


@Stage.event_handler(luigi.Event.DEPENDENCY_PRESENT)
@Stage.event_handler(luigi.Event.DEPENDENCY_MISSING)
def _record_checked(task: Stage) -> None:
    _checked.add(task.task_family)


@Stage.event_handler(luigi.Event.DEPENDENCY_DISCOVERED)
def _record_discovered(task: Stage, dependency: luigi.Task) -> None:
    _checked.add(dependency.task_family)


def stages_of(tasks: Iterable[luigi.Task]) -> list[Stage]:
    """The stages of the DAGs of `tasks`, upstream first, each once (Repro: its target's DAG)."""
    from pipeline.tasks import Repro

    order: list[Stage] = []
    for task in tasks:
        root = task.stages()[-1] if isinstance(task, Repro) else task
        if isinstance(root, Stage):
            order += [stage for stage in dag(root) if stage not in order]
    return order


def headline_metrics(metrics: dict[str, Any]) -> list[str]:
    """`name value` of every number of the validation report, one level deep (`macro_avg f1 0.98`)."""
    shown = []
    for name, value in metrics.get("validation", {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown.append(f"{name} {_number(value)}")
        elif isinstance(value, dict) and value and all(isinstance(v, (int, float)) for v in value.values()):
            shown += [f"{name} {key} {_number(v)}" for key, v in value.items()]
    return shown


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def forced_families() -> list[str]:
    """The stages that `--<Task>-force` (or `force = true` in luigi.cfg) forces in this invocation."""
    from pipeline.tasks import STAGES

    forced = []
    for family, cls in STAGES.items():
        param = dict(cls.get_params())["force"]
        try:
            if param.task_value(family, "force"):
                forced.append(family)
        except (ValueError, TypeError):  # a malformed value: the task's own construction says so
            continue
    return forced


def force_warnings(tasks: list[luigi.Task], checked: set[str]) -> list[str]:
    """One warning per forced stage that this run did not check, so did not rerun."""
    families = [stage.task_family for stage in stages_of(tasks)]
    target = tasks[0].task_family if tasks else "the target"
    warnings = []
    for family in forced_families():
        if family in checked:
            continue
        why = (
            f"Luigi looks no further up than a complete stage, and {family} is above one"
            if family in families
            else f"{family} is not part of {target}'s DAG"
        )
        warnings.append(
            f"--{family}-force did nothing: this run did not check {family} ({why}). To rerun it, and "
            f"then whatever its new output changes below it: luigi --module pipeline Repro --{family}-force"
        )
    return warnings


def results_block(tasks: list[luigi.Task], started: float) -> str:
    """The end-of-run block: root, each stage's folder and whether it was made now or reused, metrics."""
    stages = stages_of(tasks)
    lines = ["", "===== Results =====", f"Artifact root: {paths.root()}"]
    width = max((len(stage.task_family) for stage in stages), default=0)
    made, reused, missing = [], [], []
    metrics_line = ""
    for stage in stages:
        folder = stage.output_dir()
        # The output of this identity, as published (Luigi has checked it against its files already).
        marker, where = _published(stage)
        if marker is None:
            state = "not done"
            missing.append(stage.task_family)
        elif marker.get("created", 0) >= started:
            state = "made now"
            made.append(stage.task_family)
        else:
            state = f"reused{where} (made {_date(marker.get('created', 0))})"
            reused.append(stage.task_family)
        lines.append(f"  {stage.task_family:<{width}}  {folder}  {state}")
        if marker is not None and (folder / layout.METRICS).is_file():
            try:
                shown = headline_metrics(json.loads((folder / layout.METRICS).read_text()))
            except (OSError, ValueError):
                shown = []
            if shown:
                metrics_line = "Validation: " + ", ".join(shown)
        last_eval = (marker or {}).get("info", {}).get("last_eval")
        if not metrics_line and isinstance(last_eval, dict) and last_eval:  # a training without its evaluation
            shown = headline_metrics({"validation": last_eval})
            metrics_line = "Validation (the training's last evaluation): " + ", ".join(shown)
    if metrics_line:
        lines.append(metrics_line)
    lines += gate_lines(stages)
    lines.append(
        f"Ran: {', '.join(made) or 'nothing'}. Reused: {', '.join(reused) or 'nothing'}."
        + (f" Not done: {', '.join(missing)}." if missing else "")
    )
    return "\n".join(lines)


def gate_lines(stages: list[Stage]) -> list[str]:
    """The quality gate's verdict and where ExportModel put the model, from their markers (as published)."""
    lines = []
    for stage in stages:
        marker = markers.read_marker(stage.output_dir())
        if marker is None or marker.get("identity") != stage.identity().digest:
            continue
        info = marker.get("info", {})
        verdict, export = info.get("verdict"), info.get("export")
        if isinstance(verdict, dict) and verdict.get("summary"):
            lines.append(f"Quality gate: {verdict['summary']}")
        if isinstance(export, dict) and export.get("path"):
            how = "the same model's version, kept" if export.get("reused") else "a new version"
            forced = f"; forced past the gate ({export.get('verdict')})" if export.get("forced") else ""
            lines.append(f"Export: {export['path']} (version {export.get('version')}: {how}{forced})")
    return lines


def _published(stage: Stage) -> tuple[dict[str, Any] | None, str]:
    """The marker of `stage`'s output and where it is (" from the remote" or ""). A report (metrics,
    figures: what a user opens next) that is only in the remote is pulled; of the rest the marker is read."""
    folder, digest = stage.output_dir(), stage.identity().digest
    marker = markers.read_marker(folder)
    if marker is not None and marker.get("identity") == digest:
        return marker, ""
    remote = remotes.configured()
    if remote is None or remote.check(folder, digest, None):
        return None, ""
    if stage.artifact_kind == "reports":
        transfer.pull_if_needed(remote, folder, stage.identity())
        return markers.read_marker(folder), " from the remote"
    return remote.marker(folder)[0], " (in the remote)"


def _date(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def refusals(result: Any, stages: list[Stage]) -> list[str]:
    """Why the central scheduler did not run these stages: one line per stage it holds disabled after a
    failure, with its error and when it is re-enabled ([] without a central scheduler, or if it cannot say)."""
    scheduler = getattr(getattr(result, "worker", None), "_scheduler", None)
    if not isinstance(scheduler, ReconnectingScheduler):
        return []
    try:
        disabled = scheduler.call_once("task_list", {"status": "DISABLED", "upstream_status": "", "search": ""})
    except Exception:  # the run is ending: say what Luigi said
        return []
    persist = luigi.configuration.get_config().getint("scheduler", "disable_persist", 86400)
    url = f"{scheduler._url}/"
    lines = []
    for stage in stages:
        record = (disabled or {}).get(stage.task_id)
        if not isinstance(record, dict):
            continue
        since = float(record.get("last_updated") or time.time())
        lines.append(
            f"{stage.task_family} was not run: the scheduler at {url} disabled it after it failed at "
            f"{_clock(since)}{_last_error(scheduler, stage.task_id)}. It re-enables it {persist} s after that "
            f"([scheduler] disable_persist), at its next pruning (once a minute): from about "
            f"{_clock(since + persist)}; "
            f"or click Re-enable on its row in the web UI ({url}). Then run the same command again."
        )
    return lines


def _last_error(scheduler: ReconnectingScheduler, task_id: str) -> str:
    """`: <the last line of the stage's error>` as the scheduler keeps it, or nothing."""
    try:
        error = (scheduler.call_once("fetch_error", {"task_id": task_id}) or {}).get("error") or ""
        with contextlib.suppress(ValueError, TypeError):
            error = json.loads(error)
    except Exception:
        return ""
    last = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f" ({last[-1]})" if last else ""


def _clock(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def _say_paused(tasks: list[luigi.Task], started: float, interruption: KeyboardInterrupt) -> None:
    """The line of an interrupted run and its results block."""
    line = str(interruption) if isinstance(interruption, Interrupted) else ""
    print(f"\n{line or 'interrupted; the same command goes on from what is published'}", flush=True)
    with invocation.scope():
        print(results_block(tasks, started), flush=True)


def install() -> None:
    """Make command-line runs end with the results block (and force warnings). Idempotent.

    Two of Luigi's functions are wrapped: `_run`, which the `luigi` command and
    `luigi.run()` go through (and `luigi.build()` does not), marks a run as the
    command line's; `_schedule_and_run`, which every run goes through, prints
    the block after Luigi's summary for such a run. A program's `luigi.build()`
    (a test, a sweep with its own table) gets its result object and no block.
    """
    interruption.install()  # an interrupted worker gives its stage back to the scheduler
    original_run, original_schedule = luigi.interface._run, luigi.interface._schedule_and_run
    if getattr(original_schedule, "prints_results", False):
        return
    command_line = []  # non-empty while the command line's run is under way

    def _run(*args: Any, **kwargs: Any) -> Any:
        command_line.append(True)
        restore = interruption.terminate_as_interrupt()  # SIGTERM: the same pause as Ctrl-C
        try:
            result = original_run(*args, **kwargs)
        finally:
            restore()
            command_line.pop()
        if sys._getframe(1).f_code is luigi.retcodes.run_with_retcodes.__code__ and exiting.is_the_luigi_command():
            luigi.retcodes.sys = exiting.ExitsNow()  # type: ignore[assignment]  # the `luigi` command's sys.exit, next
        return result

    def _schedule_and_run(tasks: list[luigi.Task], *args: Any, **kwargs: Any) -> Any:
        started = time.time()
        _checked.clear()
        try:
            result = original_schedule(tasks, *args, **kwargs)
        except KeyboardInterrupt as interrupted:
            if not command_line:
                raise
            _say_paused(list(flatten(tasks)), started, interrupted)
            raise SystemExit(interruption.INTERRUPTED_EXIT) from None
        if not command_line:
            return result
        refused: list[str] = []
        try:
            roots = {task.task_family for task in flatten(tasks)}
            with invocation.scope():  # each stage's identity computed once for the warnings and the block
                for warning in force_warnings(list(flatten(tasks)), _checked | roots):
                    logger.warning(warning)
                print(results_block(list(flatten(tasks)), started), flush=True)
                if result.status == luigi.LuigiStatusCode.NOT_RUN:  # Luigi would exit 0 ([retcode] not_run)
                    refused = refusals(result, stages_of(list(flatten(tasks))))
        except Exception as error:  # the block must never change how the run ends (its exit code)
            logger.warning("Could not summarise the results: %s: %s", type(error).__name__, error)
        if refused:
            print("\n".join(refused), flush=True)
            raise SystemExit(luigi.retcodes.retcode().task_failed)
        return result

    _schedule_and_run.prints_results = True  # type: ignore[attr-defined]
    luigi.interface._run = _run
    luigi.interface._schedule_and_run = _schedule_and_run
