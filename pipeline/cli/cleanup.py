"""What `python -m pipeline gc` may remove, and how it lists it.

Two kinds of folders lie in the artifact roots besides the current
configuration's outputs:

- leftovers: staging folders (`<name>.partial`) of stages that crashed or
  failed, older copies moved aside at publishing (`<name>.old-<pid>-<ns>`),
  lock files in `<root>/.locks` that no process holds (a stage removes its
  own when it ends: locks.py), and symbolic links in place of an output (the
  pipeline never publishes one). gc removes these by default. It keeps a
  staging folder a run holds the lock of (it is being written), and the
  current configuration's staging folders that its next run takes up
  (training's checkpoints, or a complete one a stopped run did not publish);
- results of other configurations: complete, published outputs that the
  current configuration does not use: earlier experiments (and folders in
  their place whose marker cannot be read). gc lists them with the
  parameters that differ from the current configuration, and removes them
  only when asked to (`--unused`), choosing by age (`--older-than DAYS`) or by
  keeping the newest of each stage (`--keep-last N`).

Nothing outside the artifact root is ever removed, and a link is removed as a
link, its target never (containment.py).
"""

from __future__ import annotations

import datetime
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.core import identity, markers, publish, values
from pipeline.core.stage import STAGING_INFO
from pipeline.runtime import containment, locks

_ASIDE = re.compile(r"\.(old|pull)-\d+-\d+$")  # set aside at publishing, or a pull cut off
_STAGING_SUFFIX = publish.staging_path(Path("x")).name[1:]  # ".partial"


@dataclass(frozen=True)
class Entry:
    """One folder (or lock file) gc lists: what it is, how it differs from now, its date and size."""

    path: Path
    kind: str  # "staging", "set aside", "orphaned lock", "link", "result", "unreadable", "in use", "resumable"
    stage: str = ""
    differences: tuple[str, ...] = ()
    created: float = 0.0
    size: int = 0

    def describe(self, root: Path) -> str:
        """One line: path below the root, stage and kind, date, size, then how it differs."""
        where = self.path.relative_to(root) if self.path.is_relative_to(root) else self.path
        what = f"{self.stage} {self.kind}".strip()
        line = f"  {where}  [{what}]  {_date(self.created)}  {human_size(self.size)}"
        if self.differences:
            line += "\n      " + "; ".join(self.differences)
        return line


def human_size(size: int) -> str:
    """Bytes in B, kB, MB or GB (powers of 1000, one decimal)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _date(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else "?"


def folder_size(folder: Path) -> int:
    """Total bytes of the files below `folder` (links are not followed: containment.size)."""
    try:
        return containment.size(folder)
    except OSError:  # removed meanwhile
        return 0


def final_folder(folder: Path) -> Path:
    """The published folder a staging or set-aside folder belongs to (itself for a published one)."""
    if folder.name.endswith(_STAGING_SUFFIX):
        return folder.with_name(folder.name[: -len(_STAGING_SUFFIX)])
    return folder.with_name(_ASIDE.sub("", folder.name))


def _lock_folder() -> Path:
    """The folder of paths.lock_path's lock files, not created here."""
    return paths.root() / paths.LOCKS


def _output_in_use(final: Path) -> bool:
    """Whether a running stage holds the lock of the output `final` (its staging folder is being written).

    paths.lock_path creates the lock folder: a listing must not, and without it there is no lock to hold.
    """
    return _lock_folder().is_dir() and locks.is_held(paths.lock_path(final))


def remove(entry: Entry, root: Path) -> bool:
    """Remove a listed folder or lock file; False when a run took its lock since it was listed.

    A staging or set-aside folder is removed while holding its output's lock, so
    a run that starts meanwhile waits for the removal instead of writing into a
    folder being deleted. Nothing outside the artifact `root` is removed, and a
    link is removed as a link (containment.remove raises ValueError otherwise).
    """
    if entry.kind == "orphaned lock":
        return locks.remove_if_unused(entry.path)
    if entry.kind in RESULT_KINDS or entry.kind == "link":
        containment.remove(entry.path, root)
        return True
    with locks.try_exclusive(paths.lock_path(final_folder(entry.path))) as held:
        if held:
            containment.remove(entry.path, root)
        return held


def differences(marker: dict[str, Any], current: dict[str, Any] | None) -> tuple[str, ...]:
    """How a published output's identity differs from the current configuration's, in words.

    Parameters first, as `name value (now: current)`; when they are all the same,
    what else differs (code, versions, source folders, upstream).
    """
    if current is None:
        return ("no stage of this name in the current configuration's DAG",)
    before, now = marker.get("params", {}), current.get("params", {})
    changed = tuple(
        f"{name} {values.show(before.get(name))} (now: {values.show(now.get(name))})"
        for name in sorted(set(before) | set(now))
        if before.get(name) != now.get(name)
    )
    if changed:
        return changed
    reasons = [r for r in identity.explain_change(marker, current) if not r.startswith("parameter ")]
    return tuple(reasons) or ("same identity as the current configuration's",)


def scan(current: dict[str, Any], resumable: set[Path]) -> list[Entry]:
    """Every folder in the artifact roots (and lock file) the current configuration does not use, classified.

    `current`: the current configuration's stages by family, each as its
    output folder (`folder`) and identity dict (`identity`). `resumable`: the
    staging folders of its resumable stages, which the next run resumes from.
    """
    used = {stage["folder"] for stage in current.values()}
    by_family = {family: stage["identity"] for family, stage in current.items()}
    entries: list[Entry] = []
    for folder in paths.stage_folders():
        final = final_folder(folder)
        if folder in used:
            continue
        if folder.is_symlink():  # the pipeline never publishes one (it is not trusted): removed as a link
            entries.append(Entry(folder, "link", created=folder.lstat().st_mtime))
            continue
        mtime = folder.stat().st_mtime
        if folder != final:  # staging, or set aside
            kind = "staging" if folder.name.endswith(_STAGING_SUFFIX) else "set aside"
            if kind == "staging" and _output_in_use(final):
                kind = "in use"
            elif folder in resumable:
                kind = "resumable"
            stage = _staging_stage(folder)
            entries.append(Entry(folder, kind, stage, created=mtime, size=folder_size(folder)))
            continue
        marker = markers.read_marker(folder)
        if marker is None:  # damaged, edited by hand, or not the pipeline's: chosen like results
            entries.append(Entry(folder, "unreadable", created=mtime, size=folder_size(folder)))
            continue
        stage = str(marker.get("stage", ""))
        entries.append(
            Entry(
                folder,
                "result",
                stage,
                differences(marker, by_family.get(stage)),
                created=float(marker.get("created", mtime)),
                size=folder_size(folder),
            )
        )
    # A stage removes its lock file when it releases it (locks.py): one that nobody holds was
    # left by a process that was killed.
    lock_folder = _lock_folder()
    for lock in sorted(lock_folder.glob("*.lock")) if lock_folder.is_dir() else []:
        if not locks.is_held(lock):
            entries.append(Entry(lock, "orphaned lock", created=lock.stat().st_mtime, size=lock.stat().st_size))
    return entries


def _staging_stage(folder: Path) -> str:
    """The stage a staging or set-aside folder was for: its marker's, or its staging record's."""
    marker = markers.read_marker(folder)
    if marker is not None:
        return str(marker.get("stage", ""))
    try:
        return str(json.loads((folder / STAGING_INFO).read_text()).get("stage", ""))
    except (OSError, ValueError, AttributeError):
        return ""


LEFTOVER_KINDS = ("staging", "set aside", "orphaned lock", "link", "remote upload")
# Complete outputs, or folders in their place (in the remote: `gc --remote`): only with --unused.
RESULT_KINDS = ("result", "unreadable", "remote result")


def select(entries: list[Entry], unused: bool, older_than_days: float | None, keep_last: int | None) -> list[Entry]:
    """What gc removes: the leftovers; with `unused`, also the results chosen by age and/or count.

    With `keep_last`, the newest `keep_last` results of each stage are kept;
    with `older_than_days`, only results made longer ago than that go. With
    both, a result goes when both say so.
    """
    chosen = [entry for entry in entries if entry.kind in LEFTOVER_KINDS]
    if not unused:
        return chosen
    results = [entry for entry in entries if entry.kind in RESULT_KINDS]
    now = time.time()
    newest: dict[str, list[Entry]] = {}
    for entry in sorted(results, key=lambda e: e.created, reverse=True):
        newest.setdefault(entry.stage, []).append(entry)
    for entry in results:
        old_enough = older_than_days is None or now - entry.created > older_than_days * 86400
        beyond_last = keep_last is None or newest[entry.stage].index(entry) >= keep_last
        if old_enough and beyond_last:
            chosen.append(entry)
    return chosen
