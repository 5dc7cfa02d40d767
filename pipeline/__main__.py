"""Helper commands: `python -m pipeline status|gc|worker|runs|diff|report|sweep|search|predict|doctor ...`.

None imports TensorFlow but doctor, predict (and the trainings a sweep or a search runs); only search imports Optuna.

status TASK [--Task-param value ...]
    Every stage of TASK's DAG as up to date or stale, with the reason, and
    where its output is. Takes the same parameters as `luigi --module pipeline`.
    Exits with 0 when every stage is up to date, 1 when one is stale.
worker [--Task-param value ...]
    Join a multi-host training as a worker other than the chief: with
    TF_CONFIG naming this process, on a host that sees the artifact root.
    The chief runs `luigi --module pipeline TrainEstimator` (or any stage
    below it) with the same parameters and its own TF_CONFIG.
gc [--yes] [--unused (--older-than DAYS | --keep-last N)] [TASK] [--Task-param value ...]
    Lists what the artifact root holds besides the outputs of TASK's DAG
    (default PlotInference) in the current configuration. Removes, with --yes:
    the leftovers (staging folders of crashed or failed stages, copies moved
    aside, orphaned locks); with --unused also complete results of other
    configurations, those older than DAYS days and/or all but the newest N
    of each stage. Raw data under data/raw is never touched, nor anything
    outside the artifact root: a folder that is a link is removed as a link,
    its target never (pipeline/runtime/containment.py).

runs [--where KEY OP VALUE ...] [--sort-by COLUMN] [--reverse] [--all] [--json | --csv]
    One row per trained model under the artifact root, one table per data
    set and problem: its name (--name), the parameters that differ between
    the rows (--all: every parameter), the headline validation metrics, when
    it finished, seconds per stage. --where source=sine,
    --where TrainEstimator.learning_rate<0.01: only the runs it holds for.
diff A B
    What differs between two outputs (model folders, folder names or
    identity prefixes): parameters, code files, versions, upstream data.
report [RUN ...] [--where KEY OP VALUE ...] [--out FILE]
    One self-contained HTML page of the runs (default: all), per data set
    and problem: the table,
    the training curves overlaid, each metric against each parameter that
    differs, and each run's figures. Default FILE: reports/runs.html.
sweep TASK --Task-param A,B [--Task-param C,D ...] [--workers N] [luigi flags]
    Every combination of the listed values, down to TASK, in one Luigi
    invocation (a value with top-level commas is several values; [64],[128]
    is two lists). Stages the variants share run once. Ends with Luigi's
    summary, the table of the sweep's runs and the path of their report.
search TASK --Task-param 'loguniform(1e-4, 1e-1)' [...] [--trials N] [--sampler tpe|random]
       [--pruner median|...] [--objective validation.mse] [--workers N] [luigi flags]
    Optuna's search over TASK's DAG (uniform, loguniform, int, choice), its
    study under the artifact root: trials trained before are reused, shared
    stages made once, bad trials pruned. Ends with the table of the trials,
    the path of the report and the best trial's folders (docs/search.md).
predict RUN FILES... [--json | --csv] [--out FILE]
    A run's export (its SavedModel, through the raw-input signature) applied
    to new image files or folders, CSV rows with the training's columns, or
    the sine's x: each input's predicted class and probability, or its
    prediction (docs/serving.md).
doctor
    What TensorFlow sees (devices, CUDA/cuDNN build, mixed precision), the
    GPU slots of this host, the resource pools and the scheduler.

`python -m pipeline COMMAND --help` prints the command's own usage and options.
A mistake (an unknown task, command or parameter, a value not accepted) is one
line naming it and what is meant, exit code 40.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Protocol

import pipeline  # noqa: F401 (registers the tasks and the project's luigi.cfg)
from pipeline.cli import interface

USAGE = __doc__ or ""


# Each command is a module below pipeline/cli with `parser()` (its options: `<command> --help` prints
# them) and `main(argv) -> int`. A module is imported only when its command runs (`report` imports
# Matplotlib, `doctor` TensorFlow).
COMMANDS: tuple[str, ...] = ("status", "gc", "worker", "runs", "diff", "report", "sweep", "search", "predict", "doctor")
HELP = ("-h", "--help")


class Command(Protocol):
    """What a command module provides."""

    def parser(self) -> argparse.ArgumentParser: ...

    def main(self, argv: list[str]) -> int: ...


def command(name: str) -> Command:
    """The module of command `name` (COMMANDS)."""
    module: Command = importlib.import_module(f"pipeline.cli.{name}")
    return module


def main(argv: list[str]) -> int:
    """Run one helper command; a user's mistake prints one line and exits with 40 (interface.run_command)."""
    if argv and argv[0] in HELP:
        return interface.run_command(lambda: print(USAGE, flush=True) or 0)
    if not argv:
        return interface.usage_error("No command given.", None, list(COMMANDS))
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return interface.usage_error(f"Unknown command {name}.", name, list(COMMANDS))
    if any(word in HELP for word in rest):  # the command's own usage and options, whatever else is given
        return interface.run_command(lambda: print(command(name).parser().format_help(), end="", flush=True) or 0)
    return interface.run_command(lambda: command(name).main(rest))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
