"""Removing artifact folders without ever reaching outside the artifact root (standard library only).

`python -m pipeline gc` removes folders it found below the artifact root. What
it finds there is not trusted: a folder may be a symbolic link to anywhere (put
there by hand, or by a tool), or sit below a linked folder. Whatever markers
and links say, nothing is removed whose real path is not below the real
artifact root, and no link is followed: a link is removed itself, its target
never.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every link on the way resolved, is strictly below `root` (resolved too)."""
    real_root = os.path.realpath(root)
    return os.path.realpath(path).startswith(real_root.rstrip(os.sep) + os.sep)


def remove(folder: Path, root: Path) -> str:
    """Remove `folder`, an entry below the artifact `root`, without following links; say what was done.

    A symbolic link is unlinked (its target is not touched). A real folder is
    removed with its content only when its real path is below the real root
    (`shutil.rmtree` itself never follows the links inside it). Raises
    ValueError for anything else: it is not removed.
    """
    if os.path.realpath(folder.parent) != os.path.realpath(root) and not is_inside(folder.parent, root):
        raise ValueError(f"Refusing to remove a folder outside the artifact root {root}. Received: folder={folder}")
    if os.path.islink(folder):
        target = os.readlink(folder)
        os.unlink(folder)
        return f"removed the link {folder} (its target {target} was not touched)"
    if not is_inside(folder, root):
        raise ValueError(f"Refusing to remove a folder outside the artifact root {root}. Received: folder={folder}")
    shutil.rmtree(folder)
    return f"removed {folder}"


def size(folder: Path) -> int:
    """Bytes of the files below `folder`, links not followed (a link counts as nothing)."""
    if os.path.islink(folder):
        return 0
    total = 0
    for dirpath, _dirnames, filenames in os.walk(folder):  # os.walk does not enter linked folders
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total
