"""Imported first by the shard writers' forkserver: it dies with the process that started it.

`multiprocessing`'s forkserver outlives its parent when the parent is killed
(SIGKILL gives it no chance to close the server's pipe), and so do the writer
processes it forked and its resource tracker. With PR_SET_PDEATHSIG the kernel
sends the forkserver SIGKILL when its parent dies; its writers follow theirs
the same way (shards._die_with_parent), and the resource tracker exits once
every holder of its pipe is gone. Nothing else imports this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1

with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere the old behaviour
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
if os.getppid() == 1:  # the parent died before prctl took effect
    os._exit(1)
