"""`python -m pipeline worker`: a multi-host training's worker other than the chief (TF_CONFIG)."""

from __future__ import annotations

import sys
import time

from luigi.cmdline_parser import CmdlineParser

from pipeline.cli import interface
from pipeline.core import publish
from pipeline.errors import ParameterError
from pipeline.training import cluster

USAGE = "python -m pipeline worker [--<Task>-<param> VALUE ...]"
DESCRIPTION = """\
Join a multi-host training as a worker other than the chief: with TF_CONFIG naming this
process, on a host that sees the artifact root. The chief runs `luigi --module pipeline
TrainEstimator` (or any stage below it) with the same parameters and its own TF_CONFIG;
the parameters are luigi's (`luigi --module pipeline TrainEstimator --help` lists them)."""


def parser() -> interface.Arguments:
    """The command's help (its parameters are Luigi's, read by its parser)."""
    return interface.Arguments("python -m pipeline worker", DESCRIPTION, usage=USAGE)


def main(argv: list[str], wait_seconds: float = 600) -> int:
    """Train as a non-chief worker of TrainEstimator's multi-worker run."""
    role = cluster.role()
    if role.chief or role.num_workers < 2:
        raise ParameterError(
            "python -m pipeline worker is for the workers other than the chief of a multi-host training: "
            'set TF_CONFIG, e.g. {"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
            '"task": {"type": "worker", "index": 1}}. The chief (index 0) runs '
            "luigi --module pipeline TrainEstimator with its own TF_CONFIG."
        )
    with CmdlineParser.global_instance(["TrainEstimator", *argv]) as parser:
        task = parser.get_task_obj()
        shards = task.requires()
        deadline = time.monotonic() + wait_seconds
        while not shards.complete():  # the chief's Luigi run builds them first
            if time.monotonic() > deadline:
                print(f"No shards at {shards.output_dir()} after {wait_seconds:.0f} s.", file=sys.stderr)
                return 1
            time.sleep(1.0)
        from pipeline.training import estimator

        model_dir = publish.staging_path(task.output_dir())  # where the chief trains
        config = task.settings()
        result = estimator.train(config, shards.output_dir(), model_dir)
    print(f"worker {role.index} of {result['workers']}: trained to step {config.max_steps} ({result['strategy']})")
    return 0
