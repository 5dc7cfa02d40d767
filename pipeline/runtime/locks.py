"""Exclusive locks on files that are removed when released (standard library only).

A stage holds one while it writes an output folder, so that two runs of the same
stage (two `--local-scheduler` commands, or workers of two schedulers) do not
build it at once. The lock file is removed when the lock is released, so that
`<root>/.locks` does not fill up with one empty file per output ever written.

Removing a lock file is racy on its own: a process B may have opened the file
and wait for the lock while the holder A removes it; when A releases, B holds a
lock on a file that no longer has a name, and a process C that arrives now
creates a new file of that name and locks it at once: B and C both run. So the
holder removes the file *before* it releases the lock, and a process that got a
lock checks that the path still names the file it locked; if not, it starts
over on the new file. At most one process holds a lock on the file the path
names at any time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def _names(fd: int, path: Path) -> bool:
    """Whether `path` is (still) a name of the open file `fd`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the `with` block; remove it after.

    A POSIX record lock (lockf), not flock: it belongs to this process alone,
    so child processes forked while it is held (shard writers) do not keep it
    alive if this process is killed; the kernel releases it when the process dies.
    """
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            if _names(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file we waited for was removed by its holder: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still holding it: see the module's docstring
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def try_exclusive(path: Path) -> Iterator[bool]:
    """`exclusive` without waiting: yields True holding the lock (the file is removed after, as there),
    or False at once when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            yield False  # held: a stage is writing that output now
            return
        if not _names(fd, path):  # its holder removed it as it released it: taken up again meanwhile
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while still holding it: see the module's docstring
    finally:
        os.close(fd)


def remove_if_unused(path: Path) -> bool:
    """Remove the lock file `path` unless a process holds its lock; True if it was removed (or absent).

    For cleaning up lock files left by processes that were killed: the kernel
    released their locks, so nobody holds them, and removing them follows the
    same rule as `exclusive` (take the lock, remove, release).
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EAGAIN):
                return False  # held: a stage is writing that output now
            raise
        if _names(fd, path):
            os.unlink(path)
        return True
    finally:
        os.close(fd)


def is_held(path: Path) -> bool:
    """Whether a process holds the lock file `path` now; never creates it (no file: nobody holds it).

    A probe: it takes the lock without waiting and releases it at once. Closing
    the probe releases every lockf lock this process has on the file, so ask
    from a process that holds none on it (a process never conflicts with itself).
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # releases the lock taken above, if it was
    return False
