"""The `luigi` command's exit without the interpreter's teardown (standard library only).

After the results block, the `luigi` process still has Python's finalisation
ahead: every module is cleared and each of the hundreds of thousands of
objects TensorFlow and Keras made is deallocated one by one, memory the kernel
reclaims at once anyway. runtime/teardown.py already keeps the garbage
collector out of it (`gc.freeze`), which took the exit from 1.5 s to about
0.1 s; the deallocation itself was the 0.05-0.08 s left (issue 23: at most
0.1 s from the results block to the prompt).

So when Luigi's `run_with_retcodes` has its exit code, in the `luigi`
command itself (the console script pip writes, `sys.exit(luigi_run())`),
`exit_now` does what the interpreter's exit does first, in the same order,
and ends the process there:

1. `threading._shutdown()`: the hooks of `threading._register_atexit`
   (concurrent.futures' pools), then a join of every non-daemon thread;
2. every `atexit` handler, last registered first (logging's flush,
   multiprocessing's children, `weakref.finalize` objects, the user's own);
3. stdout and stderr flushed;
4. `os._exit` with the code `sys.exit` would give.

Not done: the deallocation of the objects still alive, so a `__del__` of one
of them does not run, nor does the flush of a file object never closed. Every
stage has published its outputs (written, synced and renamed into place)
before the results block. A program of its own that calls `luigi.build()`,
`luigi.run()` or `luigi_run()` (and may catch its SystemExit) exits as Python
does.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import Any, NoReturn


def is_the_luigi_command() -> bool:
    """Whether this process is Luigi's `luigi` console script: its file is named `luigi`, it ran `luigi_run`."""
    main, cmdline = sys.modules.get("__main__"), sys.modules.get("luigi.cmdline")
    script = getattr(main, "__file__", None) or ""
    return os.path.basename(script) == "luigi" and getattr(main, "luigi_run", None) is getattr(cmdline, "luigi_run", 0)


def status_of(code: object) -> int:
    """The exit status `sys.exit(code)` gives (a code neither None nor an int is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def exit_now(code: object = 0) -> NoReturn:
    """End the process as `sys.exit(code)` would, after its threads and exit handlers, before the teardown."""
    status = status_of(code)
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


class ExitsNow:
    """A stand-in for `sys` in one module: `exit` is `exit_now`, everything else is `sys`'s."""

    def __getattr__(self, name: str) -> Any:
        return getattr(sys, name)

    @staticmethod
    def exit(code: object = 0) -> NoReturn:
        exit_now(code)
