"""Errors a user can cause and fix, and how they reach the terminal.

A `PipelineError` carries one message that names the problem and the fix.
Luigi logs every failure with its traceback; the filter installed on Luigi's
logger prints these as their message alone: no stack trace for a mistake.
"""

from __future__ import annotations

import logging


class PipelineError(Exception):
    """A problem the user can fix; its message says what and how."""


class ParameterError(PipelineError, ValueError):
    """A parameter (command line or luigi.cfg) that is not accepted."""


class DataError(PipelineError, ValueError):
    """Input data that is missing, damaged or unusable."""


class TrainingDivergedError(PipelineError):
    """The loss became NaN or infinite."""


class QuietPipelineErrors(logging.Filter):
    """Turn a logged PipelineError's traceback into its one-line message."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, PipelineError):
            context = record.getMessage()
            context = "" if context == "Uncaught exception in luigi" else context + "\n\n  "
            record.msg = f"{context}{type(error).__name__}: {error}\n"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def install_filter() -> None:
    """Attach the filter to Luigi's logger (idempotent)."""
    logger = logging.getLogger("luigi-interface")
    if not any(isinstance(f, QuietPipelineErrors) for f in logger.filters):
        logger.addFilter(QuietPipelineErrors())
