"""The Luigi side of stage identity: a Task base class every stage derives from.

A `Stage` names its output folder by its identity, is complete only when its
marker still describes its files and the upstream bytes it consumed, and
publishes atomically. Subclasses declare `artifact_kind`, `code_modules` and
`folder_prefix()`, and implement `build(staging)`: one call into library code
that writes the stage's files into `staging`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import luigi
from luigi.task import flatten

from pipeline import diskfull, identity, locks, paths, phases
from pipeline.errors import DataError, ParameterError, PipelineError
from pipeline.identity import Identity
from pipeline.parameter_checks import CheckedParameters

logger = logging.getLogger("luigi-interface")

STAGING_INFO = "_STAGING.json"

_local = threading.local()


@contextlib.contextmanager
def _memo_scope() -> Iterator[dict[tuple[str, str], Any]]:
    """A memo shared by nested calls, dropped when the outermost call returns."""
    outermost = getattr(_local, "memo", None) is None
    if outermost:
        _local.memo = {}
    try:
        yield _local.memo
    finally:
        if outermost:
            _local.memo = None


@cache
def framework_versions() -> dict[str, str]:
    """TensorFlow and Keras major.minor, read from package metadata (no import)."""
    versions = {}
    for name, dists in (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",))):
        for dist in dists:
            try:
                versions[name] = ".".join(importlib.metadata.version(dist).split(".")[:2])
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            versions[name] = "missing"
    return versions


class Stage(CheckedParameters, luigi.Task):
    """A pipeline stage whose output folder is addressed by its identity."""

    artifact_kind: ClassVar[str]  # "data", "models" or "reports"
    code_modules: ClassVar[tuple[str, ...]] = ()  # pipeline modules whose code decides the output
    uses_tensorflow: ClassVar[bool] = False
    resumable: ClassVar[bool] = False  # keep a crashed run's staging folder (checkpoints)
    build_phase: ClassVar[str | None] = None  # the phases.PHASES entry its whole build is, if one

    force = luigi.BoolParameter(
        default=False,
        significant=False,
        description="Rerun this stage although it is up to date; stages below rerun only if its bytes change.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._created_at = time.time()
        try:
            self.validate()
        except ParameterError:
            raise
        except ValueError as error:
            raise ParameterError(str(error)) from None
        # Build the stages above now, so that every parameter of the DAG is
        # checked when the task is built, before anything runs.
        self.upstream()
        # Upstream stages take their parameters from luigi.cfg and the command line, so
        # two runs that differ only upstream (another learning rate) build an equal
        # EvaluateEstimator(). A central scheduler shared by both would take them for one
        # task and run it once: the task id names the identity too.
        self.task_id = luigi.task.task_id_str(
            self.task_family,
            {**self.to_str_params(only_significant=True, only_public=True), "identity": self.identity().short},
        )

    # --- what subclasses provide ---

    def validate(self) -> None:
        """Raise ParameterError naming a bad parameter and what is accepted (before any work)."""

    def folder_prefix(self) -> str:
        """The readable start of the output folder's name, e.g. 'sine-mlp'."""
        raise NotImplementedError

    def build(self, staging: Path) -> dict[str, Any]:
        """Write the stage's files into `staging`; return facts for the marker."""
        raise NotImplementedError

    def source_folders(self) -> dict[str, Path]:
        """Folders of user files this stage reads; their listings join its identity."""
        return {}

    # --- identity and output ---

    def upstream(self) -> dict[str, Stage]:
        """The stages this one reads, by task family."""
        return {task.task_family: task for task in flatten(self.requires())}

    def identity(self) -> Identity:
        """Parameters, code, versions, source listings and upstream identities of this stage.

        Within one outermost `complete()` or `identity()` call each stage's
        identity is computed once (the DAG asks for upstream identities often).
        """
        with _memo_scope() as memo:
            key = ("identity", self.task_id)
            if key not in memo:
                memo[key] = self._compute_identity()
            return memo[key]

    def _compute_identity(self) -> Identity:
        params = {name: getattr(self, name) for name, param in self.get_params() if param.significant}
        code = {f"pipeline/{m}.py": identity.file_code_digest(paths.pipeline_module(m)) for m in self.code_modules}
        task_file = Path(inspect.getfile(type(self)))
        code[f"pipeline/{task_file.name}:{type(self).__name__}"] = identity.file_code_digest(
            task_file, type(self).__name__
        )
        return identity.Identity(
            stage=self.task_family,
            params=params,
            code=code,
            versions=framework_versions() if self.uses_tensorflow else {},
            upstream={name: task.identity().digest for name, task in self.upstream().items()},
            sources={
                name: identity.digest(identity.folder_listing(folder)) for name, folder in self.source_folders().items()
            },
        )

    def output_dir(self) -> Path:
        """The published folder of this stage's output."""
        return paths.stage_dir(self.artifact_kind, f"{self.folder_prefix()}-{self.identity().short}")

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.output_dir() / identity.MARKER))

    def upstream_content(self) -> dict[str, str | None]:
        """The content digests of the upstream outputs as published now."""
        return {name: identity.published_content(task.output_dir()) for name, task in self.upstream().items()}

    # --- completion ---

    def stale_reasons(self) -> list[str]:
        """Why this stage's own output is not up to date ([] if it is)."""
        return identity.check_output(self.output_dir(), self.identity(), self.upstream_content())

    def complete(self) -> bool:
        """Up to date: the marker matches this identity and the files, and the
        upstream outputs still hold the bytes this stage read.

        Like Luigi (and make's intermediate files), a complete output is not
        invalidated by an upstream output that went missing or was damaged
        since: its inputs did not change. `Repro` rebuilds such stages. A
        forced stage is complete only once it has published again since this
        task object was made (that is, in this invocation).
        """
        with _memo_scope() as memo:
            key = ("complete", self.task_id)
            if key not in memo:
                memo[key] = not self.stale_reasons() and (not self.force or self._published_since_created())
            return bool(memo[key])

    def _published_since_created(self) -> bool:
        marker = identity.read_marker(self.output_dir())
        return marker is not None and marker.get("created", 0) >= self._created_at

    # --- running ---

    def progress(self, fraction: float, message: str) -> None:
        """Report progress to the scheduler (shown in Luigi's UI); a no-op outside a worker."""
        set_percentage = getattr(self, "set_progress_percentage", None)
        set_message = getattr(self, "set_status_message", None)
        if set_percentage is not None and set_message is not None:
            set_percentage(round(100 * fraction, 1))
            set_message(message)

    def run(self) -> None:
        with _memo_scope():  # identities are computed once per run (a source folder is listed once)
            self._run()

    def _run(self) -> None:
        final = self.output_dir()
        _check_writable(final.parent)
        # One run per output folder at a time, across processes (two
        # --local-scheduler runs of the same stage): the second one waits here.
        with _exclusive(final):
            if not self.stale_reasons() and (not self.force or self._published_since_created()):
                # Published by another run while this one waited: nothing to do.
                self.progress(1.0, "up to date: published by another run meanwhile")
                logger.info("%s was published meanwhile by another run; reusing %s", self, final)
                return
            self._check_inputs()
            try:
                self._build_and_publish(final)
            except Exception as error:
                if diskfull.caused_by_full_disk(error):  # OSError(ENOSPC), or TensorFlow's own errors
                    kept = " (training resumes from its last checkpoint)" if self.resumable else ""
                    raise PipelineError(
                        f"No space left on the device of {final.parent} while {self.task_family} was writing. "
                        "Free some space (python -m pipeline gc lists unused artifacts) and run again"
                        f"{kept}; nothing was published."
                    ) from None
                raise

    def _check_inputs(self) -> None:
        """Refuse to read an upstream output that was damaged since it was published."""
        for name, task in self.upstream().items():
            reasons = identity.check_output(task.output_dir(), task.identity(), None)
            if reasons:
                raise DataError(
                    f"{name} output {task.output_dir()} cannot be read: {'; '.join(reasons)}. "
                    "Rebuild it with: luigi --module pipeline Repro --local-scheduler"
                )

    def _build_and_publish(self, final: Path) -> None:
        staging = identity.staging_path(final)
        upstream_content = self.upstream_content()
        if not self.force and not identity.check_output(staging, self.identity(), upstream_content):
            # Complete and current: the last run was stopped between its marker and the rename.
            logger.info("%s publishes %s, complete before the last run stopped", self, staging)
            with phases.phase("publish"):
                identity.publish(staging, final)
            return
        self._prepare_staging(staging, upstream_content)
        started, started_at = time.monotonic(), time.time()
        with phases.phase(self.build_phase) if self.build_phase else contextlib.nullcontext():
            info = self.build(staging)
        info = {
            **info,
            "started_at": started_at,
            "finished_at": time.time(),
            "elapsed_seconds": round(time.monotonic() - started, 3),
        }
        (staging / STAGING_INFO).unlink(missing_ok=True)
        identity.write_marker(staging, self.identity(), upstream_content, info)
        with phases.phase("publish"):  # a crash here: a complete staging folder, nothing published
            identity.publish(staging, final)

    def _prepare_staging(self, staging: Path, upstream_content: dict[str, str | None]) -> None:
        """Start staging afresh, unless a resumable stage crashed on the same inputs."""
        expected = {"identity": self.identity().digest, "upstream_content": upstream_content}
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
