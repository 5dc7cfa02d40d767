"""Telling a full disk from other failures (standard library only).

A full disk reaches a stage in several forms: Python's `OSError` with errno
ENOSPC (or EDQUOT, a quota), and TensorFlow's own errors, whose types say
nothing of it (a checkpoint save that runs out of space raises
`ResourceExhaustedError`, as running out of memory does) but whose messages
carry the operating system's text. Exceptions raised while handling another
(`__context__`) or from it (`__cause__`) are looked at too.
"""

from __future__ import annotations

import errno

# strerror(ENOSPC) and strerror(EDQUOT) on Linux and macOS, as TensorFlow quotes them.
MESSAGES = ("No space left on device", "Disk quota exceeded")


def caused_by_full_disk(error: BaseException) -> bool:
    """Whether `error`, or an exception it was raised from or while handling, says the disk is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(current) for text in MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False
