"""Errors a user can cause and fix: a `PipelineError` carries one message that names the problem and the fix.

How they reach the terminal (as their message alone, no stack trace) is the
command line's business: cli/interface.py.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A problem the user can fix; its message says what and how."""


class ParameterError(PipelineError, ValueError):
    """A parameter (command line or luigi.cfg) that is not accepted."""


class DataError(PipelineError, ValueError):
    """Input data that is missing, damaged or unusable."""


class TrainingDivergedError(PipelineError):
    """The loss became NaN or infinite."""


class TrialPrunedError(PipelineError):
    """A search's pruner stopped this training: it is kept unpublished, and resumes when trained again."""


class UserCodeError(PipelineError):
    """The user's code (a callback, a loss, a metric) raised while the training ran."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while a stage ran: a pause. Its message says where it stopped and how the same
    command goes on, e.g. `TrainEstimator interrupted at step 600/1500; the same command resumes from its
    checkpoint at step 500`. A KeyboardInterrupt, so that Luigi's worker lets it through as one."""
