"""The Luigi side of stage identity: a Task base class every stage derives from.

A `Stage` names its output folder by its identity, is complete only when its
marker still describes its files and the upstream bytes it consumed, and
publishes atomically. Subclasses declare `artifact_kind`, `code_entry` and
`folder_prefix()`, and implement `build(staging)`: one call into library code
that writes the stage's files into `staging`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import luigi
from luigi.task import flatten
from luigi.task_register import Register

from pipeline import paths
from pipeline.core import identity, invocation, listing, markers, publish, pulled, transfer, values
from pipeline.core import remote as remotes
from pipeline.core.identity import Identity, framework_versions
from pipeline.core.parameters import BooleanParameter, CheckedParameters, run_label
from pipeline.errors import DataError, Interrupted, ParameterError, PipelineError
from pipeline.runtime import console, diskfull, locks, phases, preload, quiet_tensorflow, teardown, warm

logger = logging.getLogger("luigi-interface")
StageT = TypeVar("StageT", bound="Stage")
NO_VARIANT: dict[str, Any] = {}  # a stage built bare: every stage above reads luigi.cfg and the command line

STAGING_INFO = "_STAGING.json"


class Stage(CheckedParameters, luigi.Task):
    """A pipeline stage whose output folder is addressed by its identity."""

    artifact_kind: ClassVar[str]  # "data", "models" or "reports"
    code_entry: ClassVar[tuple[str, ...]] = ()  # modules whose code (and what they import) decides the output
    uses_tensorflow: ClassVar[bool] = False
    # A light TensorFlow stage: with --workers N its build goes to the worker's warm runner (runtime/warm.py).
    runs_warm: ClassVar[bool] = False
    resumable: ClassVar[bool] = False  # keep a crashed run's staging folder (checkpoints)
    build_phase: ClassVar[str | None] = None  # the phases.PHASES entry its whole build is, if one
    upstream_families: ClassVar[tuple[str, ...]] = ()  # the stages `requires` builds, by task family
    # Output files the stages below do not read and whose bytes vary from run to run (event files
    # carry timestamps): left out of the content digest they compare (fnmatch patterns).
    volatile_files: ClassVar[tuple[str, ...]] = ()

    force = BooleanParameter(
        default=False,
        significant=False,
        description="Rerun this stage although it is up to date; stages below rerun only if its bytes change.",
    )
    variant = luigi.DictParameter(
        default=NO_VARIANT,
        significant=False,
        description="Parameters of the stages above this one, by task family, e.g. "
        '{"TrainEstimator": {"learning_rate": 0.003}} (what a sweep sets); the others come from luigi.cfg and '
        "the command line.",
    )

    @invocation.scoped  # validation and identity share one listing of a source folder
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._created_at = time.time()
        self._check_variant()
        try:
            self.validate()
        except ParameterError:
            raise
        except ValueError as error:
            raise ParameterError(str(error)) from None
        # Build the stages above now, so that every parameter of the DAG is
        # checked when the task is built, before anything runs.
        self.upstream()
        self._resolved_ready = True  # from here on, to_str_params shows resolved values
        # Upstream stages take their parameters from luigi.cfg and the command line, so
        # two runs that differ only upstream (another learning rate) build an equal
        # EvaluateEstimator(). A central scheduler shared by both would take them for one
        # task and run it once: the task id names the identity too.
        self.task_id = luigi.task.task_id_str(self.task_family, {**self.brief(), "identity": self.identity().short})

    headline_params: ClassVar[tuple[str, ...]] = ()  # resolved values every log line shows (TrainEstimator: network)

    def brief(self) -> dict[str, str]:
        """What tells this task apart in a log line: its headline resolved values, the values set for it
        rather than by luigi.cfg and the command line (a sweep's), and those its variant hands upstream."""
        resolved = self.resolved()
        shown = {name: _brief(resolved[name]) for name in self.headline_params if name in resolved}
        family = self.task_family
        for name, param in self.get_params():
            if name in ("variant", "force") or name in shown or not param.significant:
                continue
            try:
                configured = param.task_value(family, name)
            except (ValueError, TypeError, luigi.parameter.MissingParameterException):
                configured = None
            if configured != getattr(self, name):
                shown[name] = _brief(resolved.get(name, getattr(self, name)))
        for upstream, overrides in sorted(self.variant.items()):
            for name, value in sorted(overrides.items()):
                shown[f"{upstream}.{name}"] = _brief(value)
        return shown

    def __repr__(self) -> str:
        # Luigi's own repr before validation, and while this one is being made: resolving the values it
        # shows may log a line naming this task (a log handler then asks its repr again), which must not
        # resolve them again (a RecursionError under pytest's log capture).
        if not self.__dict__.get("_resolved_ready") or self.__dict__.get("_in_repr"):
            return str(super().__repr__())
        self.__dict__["_in_repr"] = True
        try:
            parts = [f"{name}={value}" for name, value in self.brief().items()]
            return f"{self.task_family}({', '.join([*parts, 'id=' + self.identity().short])})"
        finally:
            self.__dict__["_in_repr"] = False

    def to_str_params(self, only_significant: bool = False, only_public: bool = False) -> dict[str, str]:
        """The parameters as the scheduler (its web UI) and Luigi's summaries show them: resolved.

        A significant parameter shows its resolved value (`network=mlp`, not
        `auto`); one that resolution made irrelevant (the cnn's sizes when the
        mlp trains, the sine's settings when images are read) is left out; and
        resolved values that are not parameters (`network_args`, `source`) are
        added. Luigi recreates a task from these (dynamic dependencies): the
        recreated task resolves to the same values, so it has the same identity.
        """
        params: dict[str, str] = super().to_str_params(only_significant, only_public)
        if not self.__dict__.get("_resolved_ready"):  # Luigi's own __init__ asks before validation
            return params
        resolved = self.resolved()
        declared = dict(self.get_params())
        shown = {}
        for name, text in params.items():
            if not declared[name].significant:
                shown[name] = text
            elif name in resolved:
                shown[name] = declared[name].serialize(resolved[name])
        for name in resolved.keys() - declared.keys():
            value = values.normalise(resolved[name])
            shown[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        # Which experiment a row of the web UI is: the data it reads, and the run's name if it has one.
        for name, text in {**self.data_source(), **run_label()}.items():
            shown.setdefault(name, text)
        return shown

    def data_source(self) -> dict[str, str]:
        """The data this stage's DAG reads, as the UI shows it (`source`, and the path of a folder or table):
        the shards' source (the stage that resolves a `source`), found up the DAG."""
        resolved = self.resolved()
        if "source" in resolved:
            return {"source": str(resolved["source"]), **{k: str(v) for k, v in self.source_folders().items()}}
        found: dict[str, str] = {}
        for stage in self.upstream().values():
            found.update(stage.data_source())
        return found

    # --- what subclasses provide ---

    def validate(self) -> None:
        """Raise ParameterError naming a bad parameter and what is accepted (before any work)."""

    def folder_prefix(self) -> str:
        """The readable start of the output folder's name, e.g. 'sine-mlp'."""
        raise NotImplementedError

    def build(self, staging: Path) -> dict[str, Any]:
        """Write the stage's files into `staging`; return facts for the marker."""
        raise NotImplementedError

    # --- the stages above, and the parameters a variant hands them ---

    @classmethod
    def families_above(cls) -> set[str]:
        """The task families of every stage above this one, transitively."""
        found: set[str] = set()
        for family in cls.upstream_families:
            found |= {family, *Register.get_task_cls(family).families_above()}
        return found

    @classmethod
    def with_variant(cls: type[StageT], variant: Mapping[str, Mapping[str, Any]]) -> StageT:
        """This stage with its own section of `variant` as parameters, handing the other sections
        up as its `variant` (the rest of its parameters come from luigi.cfg and the command line,
        as for a stage built bare). Variants that set the same values build the same task."""
        family = cls.get_task_family()
        own = dict(variant.get(family, {}))
        above = {name: values for name, values in variant.items() if name != family}
        return cls(**own, variant=above) if above else cls(**own)

    def stage_above(self, cls: type[StageT]) -> StageT:
        """The stage `cls` above this one, built with the sections of this one's variant that are
        for it and for the stages above it: a sweep's variants share the stages they set alike."""
        family = cls.get_task_family()
        if family not in self.upstream_families:
            raise TypeError(f"{self.task_family}.upstream_families does not list {family}, which it reads")

        # Once per invocation (pipeline.invocation: one command, whose luigi.cfg and command
        # line are fixed): Luigi reads every parameter anew on each construction, and
        # requires() is called often while scheduling. The task is kept beside it in the memo.
        def build() -> tuple[Stage, Stage]:
            wanted = {family, *cls.families_above()}
            return self, cls.with_variant({name: v for name, v in self.variant.items() if name in wanted})

        return invocation.cached(("stage_above", id(self), cls), build)[1]  # type: ignore[return-value]

    def _check_variant(self) -> None:
        allowed = self.families_above()
        for family, overrides in self.variant.items():
            if family not in allowed:
                raise ParameterError(
                    f"--{self.task_family}-variant names {family}, which is not a stage above {self.task_family} "
                    f"(those are: {', '.join(sorted(allowed)) or 'none'})."
                )
            names = {name for name, _ in Register.get_task_cls(family).get_params()}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise ParameterError(
                    f"--{self.task_family}-variant sets {family} parameter {unknown[0]!r}, which {family} does not "
                    f"have (it has: {', '.join(sorted(names - {'variant', 'force'}))})."
                )

    def source_folders(self) -> dict[str, Path]:
        """Folders of user files this stage reads; their listings join its identity."""
        return {}

    # --- identity and output ---

    def upstream(self) -> dict[str, Stage]:
        """The stages this one reads, by task family."""
        return {task.task_family: task for task in flatten(self.requires())}

    def identity(self) -> Identity:
        """Parameters, code, versions, source listings and upstream identities of this stage.

        Computed once per invocation, from the task's construction on
        (`pipeline.invocation`): the DAG asks for upstream identities often.
        """
        return invocation.cached(self._memo_key(), lambda: (self, self._compute_identity()))[1]

    def _memo_key(self) -> tuple[str, int]:
        # The object itself: it is kept in the memo beside its identity, so its id is not reused meanwhile.
        return ("identity", id(self))

    def resolved(self) -> dict[str, Any]:
        """What the parameters mean for this run: the values the identity hashes, the marker records
        and status shows. By default the significant parameters as parsed; stages whose parameters
        resolve (`auto`, per-network values) return the resolved values. Never assigned back."""
        return {name: getattr(self, name) for name, param in self.get_params() if param.significant}

    def code_digests(self) -> dict[str, str]:
        """Digests of the code that computes this stage: every module of the project that its
        `code_entry` modules import, transitively (identity.code_closure), and its own class."""
        closure = identity.code_closure(list(self.code_entry), [os.fspath(paths.PROJECT_DIR)])
        code = {label: identity.file_code_digest(path) for label, path in closure.items()}
        task_file = Path(inspect.getfile(type(self)))
        code[f"pipeline/{task_file.name}:{type(self).__name__}"] = identity.file_code_digest(
            task_file, type(self).__name__
        )
        return code

    def _compute_identity(self) -> Identity:
        return identity.Identity(
            stage=self.task_family,
            params=self.resolved(),
            code=self.code_digests(),
            versions=framework_versions() if self.uses_tensorflow else {},
            upstream={name: task.identity().digest for name, task in self.upstream().items()},
            sources={
                name: listing.of(folder).digest if folder.is_dir() else values.digest(identity.file_stat(folder))
                for name, folder in self.source_folders().items()
            },
        )

    def output_dir(self) -> Path:
        """The published folder of this stage's output."""
        return paths.stage_dir(self.artifact_kind, f"{self.folder_prefix()}-{self.identity().short}")

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.output_dir() / markers.MARKER))

    def upstream_content(self) -> dict[str, str | None]:
        """The content digests of the upstream outputs as published now (locally, else in the remote)."""
        remote = remotes.configured()
        content = {name: markers.published_content(task.output_dir()) for name, task in self.upstream().items()}
        for name, task in self.upstream().items():
            if content[name] is None and remote is not None:
                content[name] = remote.published_content(task.output_dir())
        return content

    # --- completion ---

    def stale_reasons(self) -> list[str]:
        """Why this stage's own output is not up to date ([] if it is): up to date locally and, with a
        remote, pushed there; or, not here, whole in the remote."""
        folder, upstream_content = self.output_dir(), self.upstream_content()
        reasons = markers.check_output(folder, self.identity(), upstream_content)
        remote = remotes.configured()
        if remote is None:
            return reasons
        if not reasons:
            return [] if remote.is_pushed(folder) else [f"not in the remote {remote.url} yet"]
        in_remote = remote.check(folder, self.identity().digest, upstream_content)
        return [] if not in_remote else reasons + [r for r in in_remote if r != remotes.NOT_IN_REMOTE]

    def location(self) -> str:
        """Where the output of this identity is whole: "local", "remote", "both" or "" (nowhere)."""
        folder, upstream_content = self.output_dir(), self.upstream_content()
        here = not markers.check_output(folder, self.identity(), upstream_content)
        remote = remotes.configured()
        there = remote is not None and not remote.check(folder, self.identity().digest, upstream_content)
        return {(True, True): "both", (True, False): "local", (False, True): "remote"}.get((here, there), "")

    @invocation.scoped
    def complete(self) -> bool:
        """Up to date: the marker matches this identity and the files, and the
        upstream outputs still hold the bytes this stage read.

        Like Luigi (and make's intermediate files), a complete output is not
        invalidated by an upstream output that went missing or was damaged
        since: its inputs did not change. `Repro` rebuilds such stages. A
        forced stage is complete only once it has published again since this
        task object was made (that is, in this invocation).

        A remote that fails while the run is being scheduled (it does not
        answer, refuses the credentials) ends the run before any work, in one
        line, as a missing luigid does; while this stage runs, it fails the stage.
        """
        try:
            return not self.stale_reasons() and (not self.force or self._published_since_created())
        except remotes.RemoteError as error:
            if self.__dict__.get("_running"):
                raise
            raise remotes.scheduling_exit(error) from None

    def _published_since_created(self) -> bool:
        marker = markers.read_marker(self.output_dir())
        return marker is not None and marker.get("created", 0) >= self._created_at

    # --- running ---

    def progress(self, fraction: float, message: str) -> None:
        """Report progress to the scheduler (shown in Luigi's UI) and at the console (pipeline/runtime/console.py)."""
        set_percentage = getattr(self, "set_progress_percentage", None)
        set_message = getattr(self, "set_status_message", None)
        if set_percentage is not None and set_message is not None:
            set_percentage(round(100 * fraction, 1))
            set_message(message)
        console.progress(fraction, message)

    def build_in_runner(self, staging: Path) -> dict[str, Any]:
        """`build`, in the warm runner (runtime/warm.py), with what the runner computed for earlier builds forgotten."""
        invocation.forget()
        with invocation.scope():
            self._running = True
            return self.build(staging)

    def warm_up_runner(self) -> None:
        """Run in the warm runner as it starts, forked as this stage was about to be: nothing here (tasks.py)."""

    @invocation.scoped  # once for the whole run: a source folder is listed once, for identity and ETL
    def run(self) -> None:
        # What this invocation computed before may be out of date now (the demo images
        # MakeShapes just wrote are a source folder of CreateShards): computed afresh.
        invocation.forget()
        self._running = True
        try:
            if self.uses_tensorflow:  # before the live line: TensorFlow's start-up lines would land in it
                imported_here = "tensorflow" not in sys.modules
                quiet_tensorflow.load()
                if imported_here:  # its modules' objects, out of every later collection (runtime/preload.py)
                    preload.freeze_imports()
            with console.running(self.task_family):
                self._run()
        except KeyboardInterrupt as interruption:  # Ctrl-C or SIGTERM (cli/results.py): a pause
            said = str(interruption) if isinstance(interruption, Interrupted) else ""
            again = "resumes from its staging folder" if self.resumable else "runs it again"
            raise Interrupted(f"{self.task_family} {said or 'interrupted; the same command ' + again}") from None
        finally:
            self._running = False

    def _run(self) -> None:
        final = self.output_dir()
        _check_writable(final.parent)
        # One run per output folder at a time, across processes (two
        # --local-scheduler runs of the same stage): the second one waits here.
        with _exclusive(final):
            if self.complete():  # published by another run while this one waited: nothing to do
                self.progress(1.0, "up to date: published by another run meanwhile")
                logger.info("%s was published meanwhile by another run; reusing %s", self, final)
                return
            remote = remotes.configured()
            if remote is not None:
                if not self.force and not markers.check_output(final, self.identity(), self.upstream_content()):
                    self._push(remote, final)  # published here before, not in the remote yet
                    return
                self._pull_inputs(remote)
            self._check_inputs()
            try:
                self._build_and_publish(final)
            except Exception as error:
                if diskfull.caused_by_full_disk(error):  # OSError(ENOSPC), or TensorFlow's own errors
                    kept = " (training resumes from its last checkpoint)" if self.resumable else ""
                    raise PipelineError(
                        f"No space left on the device of {final.parent} while {self.task_family} was writing. "
                        "Free some space (python -m pipeline gc lists leftovers and, with --unused, older results) "
                        f"and run again{kept}; nothing was published."
                    ) from None
                raise

    def _pull_inputs(self, remote: remotes.Remote) -> None:
        """Pull the upstream outputs that are only in the remote into the local root, then keep the
        pulled copies within [paths] pulled_limit_gb (never evicting one this stage reads)."""
        folders = [task.output_dir() for task in self.upstream().values()]
        for task in self.upstream().values():
            if markers.check_output(task.output_dir(), task.identity(), None):
                self.progress(0.0, f"pulling {task.task_family}'s output from {remote.url}")
                transfer.pull_if_needed(remote, task.output_dir(), task.identity())
            pulled.used(task.output_dir())
        pulled.evict(pulled.limit_bytes(), keep=folders)

    def _push(self, remote: remotes.Remote, final: Path) -> None:
        self.progress(1.0, f"pushing to {remote.url}")
        outcome = transfer.push(remote, final, adopt=not self.force)
        logger.info("%s: %s (%s)", self, outcome, remote.url)

    def _check_inputs(self) -> None:
        """Refuse to read an upstream output that was damaged since it was published."""
        for name, task in self.upstream().items():
            reasons = markers.check_output(task.output_dir(), task.identity(), None)
            if reasons:
                raise DataError(
                    f"{name} output {task.output_dir()} cannot be read: {'; '.join(reasons)}. "
                    "Rebuild it with: luigi --module pipeline Repro --local-scheduler"
                )

    def _build_and_publish(self, final: Path) -> None:
        staging = publish.staging_path(final)
        upstream_content = self.upstream_content()
        if not self.force and not markers.check_output(staging, self.identity(), upstream_content):
            # Complete and current: the last run was stopped between its marker and the rename.
            logger.info("%s publishes %s, complete before the last run stopped", self, staging)
            self._publish(staging, final)
            return
        self._prepare_staging(staging, upstream_content)
        started, started_at, cpu_started = time.monotonic(), time.time(), time.process_time()
        # TensorFlow inherited from a preloaded Luigi worker (runtime/preload.py), or imported by this process.
        before = preload.imported() if self.uses_tensorflow else {}
        runtime_before = preload.runtime_started() if self.uses_tensorflow else False
        try:
            with phases.phase(self.build_phase) if self.build_phase else contextlib.nullcontext():
                info, runner_cpu, runner = warm.build(self, staging)  # with --workers N, light stages in a warm runner
            if self.uses_tensorflow:  # its models, functions and datasets: freed now, off this thread (teardown.py)
                teardown.collect_in_background(f"{self.task_family} teardown")
                teardown.skip_at_exit()  # ... and not torn down again at exit
                imported = {"imported_by": before.get("pid", os.getpid()), "stage_pid": os.getpid()}
                info = {**info, "tensorflow_import": {**imported, "runtime_started_before": runtime_before}}
            label = run_label()  # --name, --note: what runs and the UI show, part of no identity
            info = {
                **info,
                **({"run": label} if label else {}),
                "started_at": started_at,
                "finished_at": time.time(),
                "elapsed_seconds": round(time.monotonic() - started, 3),
                # this process's, all its threads, and the runner's for its build
                "cpu_seconds": round(time.process_time() - cpu_started + runner_cpu, 3),
                **({"warm_runner": runner} if runner else {}),
            }
            (staging / STAGING_INFO).unlink(missing_ok=True)
            markers.write_marker(staging, self.identity(), upstream_content, info, volatile=self.volatile_files)
        except BaseException:
            # A failed stage that cannot resume leaves nothing behind for gc: its next run starts afresh.
            if not self.resumable:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        self._publish(staging, final)

    def _publish(self, staging: Path, final: Path) -> None:
        """Rename the complete staging folder into place, and tell every memo (invocation.published)."""
        with phases.phase("publish"):  # a crash here: a complete staging folder, nothing published
            publish.publish(staging, final)
        try:
            remote = remotes.configured()
            if remote is not None:  # files first, the marker last and create-only: pipeline/core/transfer.py
                self._push(remote, final)
        finally:
            # Its own output is none of its inputs: its identity stays (log lines show it).
            invocation.published(keep={self._memo_key(): (self, self.identity())})

    def _prepare_staging(self, staging: Path, upstream_content: dict[str, str | None]) -> None:
        """Start staging afresh, unless a resumable stage crashed on the same inputs."""
        expected = {"stage": self.task_family, "identity": self.identity().digest, "upstream_content": upstream_content}
        if self.resumable and not self.force:
            try:
                if json.loads((staging / STAGING_INFO).read_text()) == expected:
                    logger.info("%s resumes from the staging folder %s", self, staging)
                    return
            except (OSError, ValueError):
                pass
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / STAGING_INFO).write_text(json.dumps(expected))


def _check_writable(folder: Path) -> None:
    """Fail before any work when an artifact folder cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PipelineError(
            f"Cannot write to {folder} ({error.strerror}). Set [paths] root in luigi.cfg to a writable folder."
        ) from None


def _exclusive(final: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on a file in `<root>/.locks` named after an output folder, removed after."""
    return locks.exclusive(paths.lock_path(final))


def _brief(value: Any, width: int = 30) -> str:
    """A value as a short string for log lines."""
    plain = values.normalise(value)
    text = plain if isinstance(plain, str) else json.dumps(plain)
    return text if len(text) <= width else text[: width - 1] + "…"


def dag(root: Stage) -> list[Stage]:
    """The stages of `root`'s DAG, upstream first, each once."""
    order: list[Stage] = []

    def visit(stage: Stage) -> None:
        for up in stage.upstream().values():
            visit(up)
        if stage not in order:
            order.append(stage)

    visit(root)
    return order
