"""Publishing a stage's folder: written in staging beside the final one, then one atomic rename.

A crashed run leaves its staging folder (training resumes from it); a folder
without a valid marker is never published. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from pipeline import layout
from pipeline.core.markers import MARKER, read_marker


def staging_path(final: Path) -> Path:
    """The staging folder beside `final` (a crashed run leaves it there)."""
    return final.with_name(final.name + layout.STAGING_SUFFIX)


def publish(staging: Path, final: Path) -> None:
    """Move a fully written staging folder into place with one atomic rename.

    An older folder of the same identity is moved aside first and removed
    after, so at every instant `final` is either the old or the new output.
    """
    if read_marker(staging) is None:
        raise RuntimeError(f"Refusing to publish {staging}: it has no valid {MARKER}.")
    aside = None
    if os.path.lexists(final):  # also a link, even a broken one: the link is moved, never its target
        aside = final.with_name(f"{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(final, aside)
    os.rename(staging, final)
    _fsync_dir(final.parent)
    if aside is not None:
        if os.path.islink(aside):
            os.unlink(aside)
        else:
            shutil.rmtree(aside, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
