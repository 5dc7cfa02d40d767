"""Pulled copies: the stage folders this host downloaded from the remote, a cache with a size limit.

Every pull records its folder in `<root>/.remote/pulled` (its run and size);
a stage that reads a pulled copy marks it used. When `[paths] pulled_limit_gb`
is set and the pulled copies add up to more, the least recently used go,
locally only: the remote keeps them, and a stage that needs one again pulls
it again. Folders this host built are never in the cache, so never evicted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Collection
from pathlib import Path

from pipeline import paths
from pipeline.core import markers

logger = logging.getLogger("luigi-interface")


def _record_path(folder: Path) -> Path:
    return paths.remote_state() / "pulled" / f"{folder.relative_to(paths.root())}.json"


def record(folder: Path, run_id: str, size: int) -> None:
    """Note that `folder` holds a pulled copy of run `run_id`, `size` bytes."""
    path = _record_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id, "size": size}))


def used(folder: Path) -> None:
    """Mark the pulled copy in `folder` (if it is one) as just used."""
    with contextlib.suppress(OSError):
        os.utime(_record_path(folder))


def copies() -> list[tuple[float, Path, int]]:
    """The pulled copies still in place: (last used, folder, size), least recently used first.

    A folder whose run is no longer the one pulled (rebuilt here since) is no copy any more.
    """
    base = paths.remote_state() / "pulled"
    found = []
    for record_file in base.rglob("*.json") if base.is_dir() else []:
        folder = paths.root() / record_file.relative_to(base).with_suffix("")
        try:
            recorded = json.loads(record_file.read_text())
            last_used = record_file.stat().st_mtime
        except (OSError, ValueError):
            continue
        marker = markers.read_marker(folder)
        if marker is None or marker.get("run_id") != recorded.get("run_id"):
            record_file.unlink(missing_ok=True)
            continue
        found.append((last_used, folder, int(recorded.get("size", 0))))
    return sorted(found, key=lambda entry: entry[0])


def evict(limit_bytes: int, keep: Collection[Path] = ()) -> list[Path]:
    """Remove the least recently used pulled copies until they total at most `limit_bytes` (0: no limit).

    Never one in `keep` (what the running stage reads). Returns the folders removed.
    """
    if limit_bytes <= 0:
        return []
    entries = copies()
    total = sum(size for _, _, size in entries)
    removed = []
    for _, folder, size in entries:
        if total <= limit_bytes:
            break
        if folder in keep:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        _record_path(folder).unlink(missing_ok=True)
        total -= size
        removed.append(folder)
        logger.info("Removed the pulled copy %s (the pulled copies exceed [paths] pulled_limit_gb)", folder)
    return removed


def limit_bytes() -> int:
    """`[paths] pulled_limit_gb` in bytes (0: no limit)."""
    return int(float(paths.paths().pulled_limit_gb) * 1e9)
