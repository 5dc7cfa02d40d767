"""What `python -m pipeline gc --remote` lists and removes in the remote (pipeline/core/remote.py).

The remote is touched only with `--remote`, under the same rules as the
local root (pipeline/cli/cleanup.py): leftovers go with `--yes`, results of
other configurations only with `--unused` and `--older-than` / `--keep-last`.
Leftovers in the remote are uploads no marker names: a push cut off before
its marker, or the files of the host that lost a race to publish. Uploads
newer than an hour are kept: another host may be pushing them now. A result
is removed marker first, so that from that instant it is a miss, never a
folder with files missing behind a marker.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.cli import cleanup
from pipeline.core import markers
from pipeline.core.remote import Remote

UPLOAD = "remote upload"  # files below a run id that no marker names
RESULT = "remote result"
IN_PROGRESS_SECONDS = 3600  # an upload younger than this may be a push under way on another host


def scan(remote: Remote, current: dict[str, Any]) -> list[cleanup.Entry]:
    """Every folder of the remote the current configuration does not use, as gc lists them.

    `current`: the current configuration's stages by family, with their output `folder` and `identity`.
    """
    used = {stage["folder"] for stage in current.values()}
    by_family = {family: stage["identity"] for family, stage in current.items()}
    groups: dict[str, dict[str, tuple[int, str, float]]] = defaultdict(dict)
    for key, found in remote.objects(remote.prefix).items():
        below, rest = _split(remote, key)
        if below:
            groups[below][rest] = found
    entries = []
    now = time.time()
    for rel, objects in sorted(groups.items()):
        folder = remote.root / rel
        marker = None
        if markers.MARKER in objects:
            remote.forget(folder)
            marker, _ = remote.marker(folder)
        runs: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
        for rest, found in objects.items():
            if rest != markers.MARKER:
                runs[rest.split("/", 1)[0]].append(found)
        for run_id, items in sorted(runs.items()):
            newest = max(item[2] for item in items)
            if (marker is None or marker.get("run_id") != run_id) and now - newest > IN_PROGRESS_SECONDS:
                size = sum(item[0] for item in items)
                entries.append(cleanup.Entry(folder / run_id, UPLOAD, created=newest, size=size))
        if marker is not None and folder not in used:
            stage = str(marker.get("stage", ""))
            live = [
                item for rest, item in objects.items() if rest.split("/", 1)[0] in (markers.MARKER, marker["run_id"])
            ]
            entries.append(
                cleanup.Entry(
                    folder,
                    RESULT,
                    stage,
                    cleanup.differences(marker, by_family.get(stage)),
                    created=float(marker.get("created", 0)),
                    size=sum(item[0] for item in live),
                )
            )
    return entries


def _split(remote: Remote, key: str) -> tuple[str, str]:
    """A key below the prefix as (its stage folder relative to the root, the rest), or ("", key)."""
    parents = sorted(
        (parent.relative_to(remote.root).as_posix() for parent in _stage_parents(remote.root)), key=len, reverse=True
    )
    for parent in parents:
        if key.startswith(parent + "/"):
            name, _, rest = key[len(parent) + 1 :].partition("/")
            if name and rest:
                return f"{parent}/{name}", rest
    return "", key


def _stage_parents(root: Path) -> list[Path]:
    from pipeline import paths

    return list(paths.stage_parents(root).values())


def remove(remote: Remote, entry: cleanup.Entry) -> bool:
    """Delete the objects of a listed remote entry: a result's marker first, then its files (True)."""
    rel = entry.path.relative_to(remote.root).as_posix()
    base = remote.key(rel)
    if entry.kind == RESULT:
        remote.call(
            "remove a marker", remote.client.delete_object, Bucket=remote.bucket, Key=f"{base}/{markers.MARKER}"
        )
    keys = [f"{base}/{rest}" for rest in remote.objects(base)]
    for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1,000 keys
        batch = {"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True}
        remote.call("remove objects", remote.client.delete_objects, Bucket=remote.bucket, Delete=batch)
    remote.forget(entry.path if entry.kind == RESULT else entry.path.parent)
    return True
