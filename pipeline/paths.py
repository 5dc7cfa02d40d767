"""Where artifacts live: the one module that joins artifact paths.

Three roots, as in cookiecutter-data-science: `data/` (shards), `models/`
(model dirs) and `reports/` (metrics and figures), below `[paths] root` in
luigi.cfg. A relative root is relative to the folder of the luigi.cfg that set
it (the project's sets `.`: the project folder), so a run started from another
folder finds the same results. The names inside a stage's folder are in
`layout.py`; this module is in no stage's code identity (where a folder is
does not change what is in it).
"""

from __future__ import annotations

import configparser
import functools
import os
from pathlib import Path

import luigi
from luigi.configuration import LuigiConfigParser

from pipeline.core import invocation

PROJECT_DIR = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent

# Below the reports root: the page `python -m pipeline report` writes by default.
RUNS_REPORT = "runs.html"


class paths(luigi.Config):  # noqa: N801 (Luigi names config sections after the class)
    """`[paths]` in luigi.cfg: where the artifact roots are."""

    root = luigi.Parameter(
        default=".",
        description="Folder holding data/, models/ and reports/; relative to the folder of the luigi.cfg that sets it.",
    )
    remote = luigi.Parameter(
        default="",
        description="s3://bucket/prefix shared by hosts without a shared folder (pipeline/core/remote.py); "
        "empty: none. Access through the standard AWS configuration (environment, profiles, endpoint_url).",
    )
    pulled_limit_gb = luigi.FloatParameter(
        default=0.0,
        description="Size limit of the copies pulled from the remote into this root, in GB (0: none): the least "
        "recently used are removed here, never from the remote.",
    )


def root() -> Path:
    """The artifact root as an absolute path.

    `[paths] root` as Luigi reads it (luigi.cfg files, the command line's
    `--paths-root`). A relative value is taken relative to the folder of the
    luigi.cfg that set it, so `root = .` in the project's luigi.cfg means the
    project folder wherever `luigi` is started; a value that no file set (the
    command line, a program) is relative to the working directory.
    """
    return _resolved_root(paths().root, tuple(LuigiConfigParser._config_paths), os.getcwd())


@functools.lru_cache(maxsize=16)
def _resolved_root(value: str, config_files: tuple[str, ...], cwd: str) -> Path:
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        return Path(os.path.normpath(path))
    base = Path(cwd)
    setter = _file_that_sets("paths", "root", config_files, cwd)
    if setter is not None and setter[1] == value:
        base = setter[0].parent
    # normpath, not resolve(): a root reached through a symbolic link keeps the name the user gave it.
    return Path(os.path.normpath(base / path))


def _file_that_sets(section: str, option: str, config_files: tuple[str, ...], cwd: str) -> tuple[Path, str] | None:
    """The last of Luigi's config files that sets `[section] option`, and the value it sets (the one Luigi uses)."""
    found = None
    for name in config_files:
        file = Path(cwd, os.path.expanduser(name))
        if not file.is_file():
            continue
        parser = LuigiConfigParser()  # one file alone, with Luigi's own interpolation
        try:
            parser.read(file)
            value = parser.get(section, option, None)
        except (configparser.Error, OSError, ValueError):  # a file Luigi itself rejects: Luigi says so, not this
            continue
        if value is not None:
            found = (file, str(value))
    return found


LOCKS = ".locks"  # below the root: output locks and the publish log, kept out of the artifact roots


def artifact_root(kind: str) -> Path:
    """The root folder for `kind` ("data", "models" or "reports")."""
    if kind not in ("data", "models", "reports"):
        raise ValueError(f"Unknown artifact kind. Expected data, models or reports. Received: kind={kind!r}")
    return root() / kind


def stage_dir(kind: str, name: str) -> Path:
    """The published folder of one stage output, e.g. `data/shards/sine-<id>`."""
    artifact_root(kind)  # refuses an unknown kind
    return stage_parents(root())[kind] / name


def stage_folders() -> list[Path]:
    """Every folder stages wrote (published, staging or set aside), in all artifact roots."""
    parents = [parent for kind, parent in stage_parents(root()).items() if kind != "raw"]
    return sorted(p for parent in parents if parent.is_dir() for p in parent.iterdir() if p.is_dir())


def stage_parents(root: Path) -> dict[str, Path]:
    """The folders below an artifact root that hold stage folders, by kind: shards, models, reports and raw data."""
    return {
        "data": root / "data" / "shards",
        "models": root / "models",
        "reports": root / "reports",
        "raw": root / "data" / "raw",
    }


def lock_path(folder: Path) -> Path:
    """The lock file that serialises runs writing one output folder (kept out of the artifact roots)."""
    locks = root() / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    return locks / f"{folder.parent.name}-{folder.name}.lock"


def publish_log() -> Path:
    """A file every publish appends a byte to: its size tells a running invocation that an output appeared."""
    return root() / LOCKS / "published"


def raw_dir(name: str) -> Path:
    """A folder of raw data, e.g. `data/raw/shapes`: written once, never modified."""
    return stage_parents(root())["raw"] / name


EXPORTS = "exports"  # below the root: TF Serving's model base paths, one per exported model name


def export_base(name: str) -> Path:
    """The model base path (TF Serving's `model_base_path`) of an exported model, `<root>/exports/<name>`."""
    return root() / EXPORTS / name


SEARCHES = "searches"  # below the root: one folder per search's study (its journal, its trials' logs)


SEARCH_JOURNAL = "study.journal"


def search_journal(study: str, under: Path | None = None) -> Path:
    """The journal file of a search's Optuna study, `<root>/searches/<study>/study.journal` (`under`: that
    artifact root, not the configured one)."""
    return (root() if under is None else under) / SEARCHES / study / SEARCH_JOURNAL


def remote_state() -> Path:
    """What this host knows of the remote (its markers, what it pushed and pulled), under the artifact root."""
    return root() / ".remote"


def cache_dir() -> Path:
    """Small remembered verdicts (a user's network checked once per version), under the artifact root."""
    return root() / ".cache"


invocation.publish_log = publish_log  # the memo of each invocation checks it (core/invocation.py)
