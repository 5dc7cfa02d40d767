"""A TensorFlow training workflow as an incremental Luigi pipeline.

`luigi --module pipeline PlotInference` loads this package. It imports Luigi
and the task classes only: no TensorFlow, so scheduling stays fast.
"""

import logging
import os

from luigi.configuration import LuigiConfigParser

from pipeline.paths import PROJECT_DIR

# The project's luigi.cfg holds every default. Read it first wherever luigi is
# run from; a luigi.cfg in the working directory or LUIGI_CONFIG_PATH still wins.
_project_cfg = str(PROJECT_DIR / "luigi.cfg")
if _project_cfg not in LuigiConfigParser._config_paths:
    LuigiConfigParser._config_paths.insert(0, _project_cfg)
    LuigiConfigParser.reload()

# TensorFlow (imported later, inside run()) prints C++ INFO lines; keep warnings.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# On a GPU host, stages that run TensorFlow in the worker process (evaluation, plots) see
# every GPU: let them take the memory they use, not all of it on every GPU, which the
# trainings on their own slots (pipeline/runtime/gpu_slots.py) need.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
# TensorFlow and Keras call logging.warning() on the root logger, which makes
# Python install a default root handler that then repeats every Luigi line.
if not logging.root.handlers:
    logging.root.addHandler(logging.NullHandler())

from pipeline.cli import scheduler  # noqa: E402
from pipeline.cli.interface import install_filter  # noqa: E402
from pipeline.core import parameters  # noqa: E402

install_filter()  # a user's mistake prints as one message, not a traceback
parameters.install()  # ... also a bad value for the flags of the task named on the command line

from pipeline.tasks import (  # noqa: E402
    CreateShards,
    EvaluateEstimator,
    ExportModel,
    MakeShapes,
    PlotInference,
    Repro,
    TrainEstimator,
)

# Without a central scheduler, fail at once with a hint (not after Luigi's 90 s of retries).
scheduler.install_check()

from pipeline.cli import interface, results  # noqa: E402
from pipeline.runtime import preload, teardown  # noqa: E402

interface.install()  # a mistyped task or flag: one line with the one meant; --help lists the DAG's parameters
results.install()  # a command-line run ends with where its results are, its metrics, what ran
preload.install()  # with --workers N, TensorFlow is imported once per worker, not once per task
# No collection of every module's objects at exit (runtime/teardown.py): 70-130 ms of an up-to-date check's
# 0.45 s went there, after the results block.
teardown.skip_at_exit()

__all__ = ["CreateShards", "EvaluateEstimator", "ExportModel", "MakeShapes", "PlotInference", "Repro", "TrainEstimator"]
