"""ExportModel's copy: a blessed model's SavedModel into a TF Serving model base path, `<base>/<version>/`.

TF Serving watches `model_base_path` and serves the highest integer-named
subfolder (names that are not integers, as the staging folders here, are
ignored). A new version is the highest one there plus one, copied into a
staging folder beside it and renamed into place, so a server never sees half
a version. The same model exported again (a rerun after the gate's thresholds
changed, the export record deleted) finds its version by comparing files byte
for byte, and reuses it. The caller holds a lock on `<base>` (two runs never
number the same version). No TensorFlow: files are copied, not loaded.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DataError

RECORD = "export.json"  # in ExportModel's own folder: what was exported where, and the gate's verdict
STAGING_PREFIX = ".partial-"  # a version being copied: `.partial-<version>`, not an integer


@dataclass(frozen=True)
class Exported:
    """Where a model went: its version below the base path, and whether that version was there already."""

    version: int
    path: Path
    reused: bool
    files: dict[str, int]  # relative path -> size, of the version's files


def sizes(folder: Path) -> dict[str, int]:
    """Every file below `folder` by relative POSIX path, with its size."""
    found = {}
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath, name)
            found[path.relative_to(folder).as_posix()] = path.stat().st_size
    return found


def versions(base: Path) -> dict[int, Path]:
    """The versions below a model base path, as TF Serving sees them: integer-named folders."""
    if not base.is_dir():
        return {}
    return {int(p.name): p for p in base.iterdir() if p.is_dir() and p.name.isdigit()}


def same_files(a: Path, b: Path, a_sizes: dict[str, int]) -> bool:
    """Whether folder `b` holds exactly the files of `a` (sizes `a_sizes`), byte for byte."""
    if sizes(b) != a_sizes:
        return False
    return all(filecmp.cmp(a / rel, b / rel, shallow=False) for rel in a_sizes)


def export(saved_model: Path, base: Path) -> Exported:
    """Copy the SavedModel folder `saved_model` to the next version below `base`, or find it there already."""
    if not (saved_model / "saved_model.pb").is_file():
        raise DataError(
            f"{saved_model} holds no saved_model.pb: the training's export is missing. Rebuild it with: "
            "luigi --module pipeline Repro --TrainEstimator-force --local-scheduler"
        )
    source = sizes(saved_model)
    existing = versions(base)
    for version in sorted(existing, reverse=True):
        if same_files(saved_model, existing[version], source):
            return Exported(version, existing[version], reused=True, files=source)
    base.mkdir(parents=True, exist_ok=True)
    for leftover in base.glob(STAGING_PREFIX + "*"):  # a copy a crash interrupted (the caller holds the lock)
        shutil.rmtree(leftover, ignore_errors=True)
    version = max(existing, default=0) + 1
    staging, final = base / f"{STAGING_PREFIX}{version}", base / str(version)
    shutil.copytree(saved_model, staging)
    os.rename(staging, final)
    return Exported(version, final, reused=False, files=source)


def check(path: Path, files: dict[str, int]) -> list[str]:
    """Why the exported version at `path` no longer holds the files recorded ([] when it does)."""
    if not path.is_dir():
        return [f"the export {path} is gone"]
    found = sizes(path)
    changed = sorted(rel for rel in files.keys() | found.keys() if files.get(rel) != found.get(rel))
    return [f"the export {path} changed since ({', '.join(changed[:3])})"] if changed else []
