"""TensorFlow imported without its C++ start-up lines on the console.

Importing TensorFlow 2.21 prints, before its logging is set up (so whatever
`TF_CPP_MIN_LOG_LEVEL` says), the absl preamble `WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR`, oneDNN's
`I... port.cc] oneDNN custom operations are on...` (twice: two libraries) and
the CPU feature guard's two lines. They are written to file descriptor 2, so
on a terminal they land in the middle of the live progress line. `load()`
imports TensorFlow with descriptor 2 pointed at a temporary file and writes
back whatever else was said meanwhile (a real warning, a Python error). A
user who wants every line sets `TF_CPP_MIN_LOG_LEVEL=0`
(pipeline/__init__.py sets 1 otherwise). Standard library only.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile

# The start-up lines, and nothing else: INFO records of the C++ logger, absl's preamble, and the
# continuation line of the CPU feature guard's message.
STARTUP_LINE = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ \S+\] .*"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .*)$"
)


def wanted() -> bool:
    """Whether the user asked for TensorFlow's start-up lines (`TF_CPP_MIN_LOG_LEVEL=0`)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0"


def load() -> None:
    """Import TensorFlow (a no-op once it is imported) with its start-up lines left out of the console."""
    if "tensorflow" in sys.modules or wanted():
        importlib.import_module("tensorflow")
        return
    with tempfile.TemporaryFile() as captured:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module("tensorflow")
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            said = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in said if not STARTUP_LINE.match(line.rstrip("\n")))
            if kept:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(kept)
                    sys.stderr.flush()
