"""Helper processes that end with the process that started them (standard library only, no side effects).

A stage killed with SIGKILL gets no chance to stop what it started: its shard
writers' forkserver and writers, its training child. Each of those calls
`die_with_parent()` first thing, so the kernel kills it when its parent dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int | None = None, *, watch: bool = False) -> None:
    """Have this process SIGKILLed when its parent dies; exit at once if the parent is gone already.

    On Linux the kernel does it (PR_SET_PDEATHSIG). Elsewhere, with `watch`, a
    daemon thread checks the parent every half second and exits the process
    when it is gone; without `watch`, nothing is done there (a process that
    forks, the forkserver, must stay single-threaded).

    `parent`: the parent's pid, when the parent passed it: a parent that died
    before the request took effect is then noticed whoever adopted this process.
    Without it, the parent is gone when the process was adopted by init (pid 1).
    """
    known = os.getppid() if parent is None else parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):  # not Linux
        if watch:

            def follow() -> None:
                while os.getppid() == known:
                    time.sleep(0.5)
                os._exit(1)

            threading.Thread(target=follow, daemon=True).start()
    if os.getppid() != known or (parent is None and known == 1):  # the parent died before the request took effect
        os._exit(1)
