"""`python -m pipeline search TASK --Task-param DISTRIBUTION ... [--trials N] [options] [luigi flags]`.

    python -m pipeline search PlotInference \\
        --TrainEstimator-learning-rate 'loguniform(1e-4, 1e-1)' \\
        --TrainEstimator-hidden-units 'choice([64], [100, 100])' \\
        --trials 20 --sampler tpe --pruner median --objective validation.mse --workers 2

A `--Task-param` written as a distribution (uniform, loguniform, int, choice:
pipeline/experiments/space.py) is searched; one written as a value is the same for every
trial. The search's own options: `--trials N` (the study's budget, 20), `--sampler tpe|random`,
`--pruner median|percentile|halving|hyperband|threshold|none` (with Optuna's keyword
arguments: `median(n_startup_trials=2)`), `--objective` (a metric of the evaluation; the
first one by default), `--direction minimize|maximize` (by the metric), `--seed N` (the
sampler's), `--study NAME`, `--workers N` (trials at once, up to the gpu pool), `--lease
SECONDS` (a running trial whose search has not renewed it that long is interrupted: 120 s). The rest is
Luigi's, as with `luigi` (`--local-scheduler`, the scheduler's address).

Every mistake is one line and exit code 40 before anything runs. The command ends with
the table of the study's trials, the path of its HTML report and the best trial's folders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from luigi.retcodes import retcode
from luigi.task_register import Register

from pipeline import paths
from pipeline.cli import interface
from pipeline.core.stage import Stage
from pipeline.errors import ParameterError
from pipeline.experiments import space, study
from pipeline.experiments.sweep import stage_flag

USAGE = (
    "python -m pipeline search TASK --<Task>-<param> DISTRIBUTION [...] [--trials N] [--sampler S] [--pruner P] "
    "[--objective METRIC] [luigi options]"
)


def _options() -> interface.Arguments:
    about = (__doc__ or "").split("\n\n", 1)[1]  # the module's docstring after its first line
    parser = interface.Arguments("python -m pipeline search", about, usage=USAGE)
    parser.add_argument("--trials", type=int, default=20, help="The study's budget of trials.")
    parser.add_argument("--sampler", default="tpe", help="tpe or random.")
    parser.add_argument("--pruner", default="median", help="median, percentile, halving, hyperband, threshold, none.")
    parser.add_argument("--objective", default="", help="A metric of the evaluation (default: its first).")
    parser.add_argument("--direction", choices=("minimize", "maximize"), help="Default: by the metric.")
    parser.add_argument("--seed", type=int, default=0, help="The sampler's seed.")
    parser.add_argument("--study", default="", help="The study's name.")
    parser.add_argument("--workers", type=int, default=1, help="Trials at once, up to the gpu pool.")
    parser.add_argument(
        "--lease",
        type=float,
        default=study.LEASE_SECONDS,
        metavar="SECONDS",
        help="A running trial whose search has not renewed its lease for this long (a host gone) is interrupted.",
    )
    return parser


def parser() -> interface.Arguments:
    """The command's options (its --help); the distributions and Luigi's flags follow TASK."""
    return _options()


def _target(name: str) -> type[Stage]:
    try:
        target = Register.get_task_cls(name)
    except Exception:
        raise interface.unknown_task(name) from None
    if not (isinstance(target, type) and issubclass(target, Stage)):
        raise ParameterError(f"search: {name} is not a stage of the pipeline.")
    if target.get_task_family() != "EvaluateEstimator" and "EvaluateEstimator" not in target.families_above():
        raise ParameterError(
            f"search {name}: the objective is a metric of the evaluation, which {name}'s DAG does not have. "
            "Search EvaluateEstimator or PlotInference."
        )
    return target


def _without_workers(words: Sequence[str]) -> list[str]:
    """Luigi's flags but --workers, the search's own: each trial process runs one stage at a time."""
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word == "--workers":
            skip = True
        elif not word.startswith("--workers="):
            kept.append(word)
    return kept


def parse(argv: Sequence[str]) -> Any:
    """The checked search of a command line (experiments.search.Search); ParameterError, one line, otherwise.

    Checked before anything runs: the task, each distribution and its range, every flag (an
    unknown one with the one meant), the sampler and the pruner, the objective against the
    evaluation's metrics, and the values at the ends of each range against the stages.
    """
    from pipeline.experiments import search
    from pipeline.training import pruning

    if not argv or argv[0].startswith("-"):
        raise ParameterError(
            "python -m pipeline search needs a task first, e.g. search PlotInference "
            "--TrainEstimator-learning-rate 'loguniform(1e-4, 1e-1)' --trials 20"
        )
    target = _target(argv[0])
    options, rest = _options().parse_known_args(list(argv[1:]))
    dimensions: list[space.Dimension] = []
    fixed: list[str] = []
    passthrough: list[str] = []
    known = set(interface.known_flags())
    while rest:
        word = rest.pop(0)
        flag, has_value, value = word.partition("=")
        found = stage_flag(flag)
        if found is None:
            if flag.startswith("--") and flag not in known:
                raise interface.argument_error(f"unrecognized arguments: {flag}")
            passthrough.append(word)
            continue
        if not has_value:
            if not rest:
                raise ParameterError(f"{flag} needs a value or a distribution, e.g. {flag} 'uniform(0, 1)'.")
            value = rest.pop(0)
        if not space.is_distribution(value):
            fixed += [flag, value]
            continue
        cls, name = found
        param = dict(cls.get_params())[name]
        family = cls.get_task_family()
        if not param.significant or name in ("variant", "force"):
            raise ParameterError(f"{flag} does not change a result (it is not significant): nothing to search.")
        if family != target.get_task_family() and family not in target.families_above():
            raise ParameterError(f"{flag}: {family} is not a stage of {target.get_task_family()}'s DAG.")
        if any(d.flag == flag for d in dimensions):
            raise ParameterError(f"{flag} is given twice: give one distribution per parameter.")
        dimensions.append(space.parse(family, name, flag, param, value))
    if not dimensions:
        raise ParameterError(
            "search: no parameter to search. Give one as a distribution, e.g. "
            "--TrainEstimator-learning-rate 'loguniform(1e-4, 1e-1)'."
        )
    if options.trials < 1 or options.workers < 1 or not options.lease > 0:
        raise ParameterError(
            "search: --trials, --workers and --lease are positive numbers. "
            f"Received: {options.trials}, {options.workers}, {options.lease}"
        )
    if options.sampler not in search.SAMPLERS:
        raise ParameterError(
            f"search: unknown --sampler {options.sampler}. Expected one of {', '.join(search.SAMPLERS)}."
        )
    wanted = search.Search(
        target=target,
        dimensions=tuple(dimensions),
        objective=options.objective,
        direction=options.direction or "",
        trials=options.trials,
        sampler=options.sampler,
        pruner=pruning.parse_pruner(options.pruner),
        seed=options.seed,
        workers=options.workers,
        luigi_argv=(target.get_task_family(), *fixed, *_without_workers(passthrough)),
        study_name=options.study,
        lease_seconds=options.lease,
        fixed=tuple(fixed),
    )
    return search.checked(wanted)


def main(argv: list[str]) -> int:
    """Run a search; print its trials, write its report, end with the best trial's folders."""
    from pipeline.experiments import search, search_report

    wanted = parse(argv)
    outcome = search.run(wanted)
    print(search_report.table(outcome.rows, wanted))
    report = search_report.write(outcome, wanted, paths.artifact_root("reports") / f"{outcome.name}.html")
    print(f"\nStudy {outcome.name}: {outcome.journal}")
    print(f"Report: {report.resolve()}")
    if outcome.best is None:
        print("No trial finished with a result yet.")
    else:
        best = outcome.best
        print(
            f"Best: trial {best.number}, {wanted.objective} {best.value:.4g} ({search_report.values_of(best, wanted)})"
        )
        width = max(len(family) for family in outcome.best_folders)
        for family, folder in outcome.best_folders.items():
            print(f"  {family:<{width}}  {folder}")
    return retcode().task_failed if outcome.failed else 0
