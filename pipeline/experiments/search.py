"""`python -m pipeline search TASK --Task-param 'loguniform(1e-4, 1e-1)' ... --trials 20`: Optuna over the DAG.

Optuna chooses each trial's values (its sampler: TPE or random); each trial is TASK
built with a `variant` of them, by the sweep's mechanism (`Stage.with_variant`), so
the stages no value reaches are one task for every trial and are made once, and a
configuration trained before (by a sweep, a search or by hand) is complete already:
its result is told to the study and nothing runs (state `reused`). Trials run in
trial processes (pipeline/experiments/trials.py), up to `--workers` at once: a trial
that ends frees its process for the next one, no batch waits for its slowest trial.
The training reports each evaluation to its trial (pipeline/training/pruning.py), and
a pruned trial stops there; its checkpoints stay in the staging folder and its
configuration is never published as trained.

The study lives under the artifact root, in Optuna's journal file
(`searches/<study>/study.journal`, paths.search_journal), so a search stopped by
Ctrl-C or a crash goes on where it was when started again (an interrupted trial's
values are tried first, and its training resumes from its checkpoints), and a second
host sharing the root adds trials to it. The study is named after what is searched:
TASK, the space, the other values of the command line, the objective and the
identity of TASK's DAG as configured. The same search again runs nothing; `--trials
30` after 20 runs 10 more.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import luigi
from luigi.cmdline_parser import CmdlineParser

from pipeline import layout, paths
from pipeline.core import markers, values
from pipeline.core.stage import Stage, dag
from pipeline.errors import ParameterError
from pipeline.evaluation import scoring
from pipeline.experiments import space, study, trials
from pipeline.training import pruning

SAMPLERS = ("tpe", "random")
HIGHER_IS_BETTER = ("accuracy", "f1")  # metric names (or their ends) that a search maximises


@dataclass(frozen=True)
class Search:
    """What a search command asks for, checked: the stage, the space, the objective and how to search."""

    target: type[Stage]
    dimensions: tuple[space.Dimension, ...]
    objective: str  # a metric of the evaluation, e.g. "validation.mse"
    direction: str  # "minimize" or "maximize"
    trials: int
    sampler: str
    pruner: tuple[str, dict[str, Any]]
    seed: int
    workers: int
    luigi_argv: tuple[str, ...]  # TASK, the fixed --Task-param values and Luigi's flags, as each trial gets them
    study_name: str = ""  # --study NAME; empty: named after the search
    lease_seconds: float = study.LEASE_SECONDS  # --lease SECONDS: a trial of a search gone longer is interrupted
    fixed: tuple[str, ...] = field(default=())  # the fixed --Task-param values (part of the study's name)

    @property
    def metric(self) -> str:
        """The objective's name in the evaluation's headline (`mse`)."""
        return self.objective.removeprefix("validation.")

    def definition(self, base_identity: str) -> dict[str, Any]:
        """What the study is of; equal definitions are one study."""
        return {
            "target": self.target.get_task_family(),
            "space": {d.label: d.spelling() for d in self.dimensions},
            "fixed": list(self.fixed),
            "objective": self.objective,
            "direction": self.direction,
            "identity": base_identity,
        }

    def variant(self, params: dict[str, Any], trial: str) -> dict[str, dict[str, Any]]:
        """The variant of a trial's sampled `params` (keyed by label), its training told its trial (study/N)."""
        variant: dict[str, dict[str, Any]] = {}
        for dimension in self.dimensions:
            variant.setdefault(dimension.family, {})[dimension.name] = dimension.value(params[dimension.label])
        variant.setdefault("TrainEstimator", {})["trial"] = trial
        return variant


def checked(search: Search) -> Search:
    """The search with its objective and direction settled, after building its trials' ends once.

    ParameterError for an objective that is not a metric of the evaluation (naming them), or a
    value at an end of a range that a stage refuses (named by the stage, as on the command line).
    """
    with CmdlineParser.global_instance(list(search.luigi_argv)):
        return _checked(search)


def _checked(search: Search) -> Search:
    base = search.target()
    shards = next(stage for stage in dag(base) if stage.task_family == "CreateShards")
    problem = shards.schema().problem  # type: ignore[attr-defined]
    metrics = [f"validation.{name}" for name in scoring.of(problem).headline_metrics]
    objective = search.objective or metrics[0]
    if objective not in metrics and f"validation.{objective}" in metrics:
        objective = f"validation.{objective}"
    if objective not in metrics:
        raise ParameterError(
            f"search: --objective {objective} is not a metric of the evaluation of this {problem}: "
            f"its metrics are {', '.join(metrics)}."
        )
    name = objective.removeprefix("validation.")
    higher = any(name == word or name.endswith("_" + word) for word in HIGHER_IS_BETTER)
    direction = search.direction or ("maximize" if higher else "minimize")
    for dimension in search.dimensions:  # a value each end of a range takes is refused now, not in trial 7
        ends = dimension.choices if dimension.kind == "choice" else (dimension.low, dimension.high)
        for end in ends:
            sampled = int(end) if dimension.kind == "int" else end
            search.target.with_variant({dimension.family: {dimension.name: dimension.value(sampled)}})
    return Search(**{**search.__dict__, "objective": objective, "direction": direction})


# --- running the trials ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a search did: its study, every trial, the best one's folders, and what failed."""

    name: str
    journal: Path
    rows: list[study.Row]
    best: study.Row | None
    best_folders: dict[str, Path]
    runs: list[str]  # the model folders of the trials that have one, by trial number
    failed: int  # trials of this session that failed (not pruned)


def _say(message: str) -> None:
    print(f"search: {message}", file=sys.stderr, flush=True)


def _local_scheduler() -> bool:
    return bool(luigi.interface.core().local_scheduler)


def _describe(search: Search, params: dict[str, Any]) -> str:
    return ", ".join(f"{d.name} {_short(params[d.label])}" for d in search.dimensions)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def study_name(search: Search, base: str) -> str:
    """`--study NAME`, or the model folders' prefix and a digest of what is searched: `sine-mlp-search-<12 hex>`."""
    prefix = _model(search.target()).name.rsplit("-", 1)[0]
    return search.study_name or f"{prefix}-search-{values.digest(search.definition(base))[:12]}"


def run(search: Search) -> Outcome:
    """Run the search until its study holds `search.trials` finished trials (imports Optuna)."""
    with CmdlineParser.global_instance(list(search.luigi_argv)):  # every stage reads the command line
        base = search.target().identity().digest
        name = study_name(search, base)
        found = study.open_study(
            name, search.definition(base), search.direction, search.sampler, search.seed, search.pruner, search.metric
        )
        size = search.workers
        if _local_scheduler() and size > gpu_pool():  # luigid counts its own pool; here each trial has one
            _say(f"--workers {size}: {gpu_pool()} trial(s) at once, the gpu pool ([resources] gpu in luigi.cfg)")
            size = gpu_pool()
        pool = trials.Pool(size)
        failed = 0
        try:
            failed = _trials(search, name, found, pool)
        except KeyboardInterrupt:
            pool.close()
            study.recover(found, this_process_too=True)
            raise
        finally:
            pool.close()
        rows = study.rows(found)
        results = [row for row in rows if row.state in ("complete", "reused") and row.value is not None]
        sign = -1 if search.direction == "maximize" else 1
        best = min(results, key=lambda row: (sign * float(row.value or 0), row.number), default=None)
        best_folders = {}
        if best is not None:
            best_folders = folders(search.target.with_variant(search.variant(best.params, f"{name}/{best.number}")))
        return Outcome(
            name, paths.search_journal(name), rows, best, best_folders, [r.run for r in rows if r.run], failed
        )


def _trials(search: Search, name: str, found: Any, pool: trials.Pool) -> int:
    """Ask for trials and run them until the budget is spent; the number that failed.

    A trial whose DAG is complete is told at once (reused); the others go to a free trial
    process, and as soon as one ends its result is told and the next trial is asked for.
    """
    distributions = {d.label: d.distribution() for d in search.dimensions}
    running: dict[int, tuple[Any, Stage, bool, float]] = {}  # number -> trial, root, training reused, started
    failed = 0
    renewed = 0.0
    while True:
        for number, why in study.recover(found):  # before asking: what they were asked again first
            _say(f"trial {number} was interrupted ({why}): its values are tried again first")
        finished, busy = study.counts(found)  # every host's: a second host shares the budget
        while pool.free() and finished + busy < search.trials:
            trial = found.ask(distributions)
            trial.set_user_attr(study.ASKED_BY, study.host_tag())
            study.lease([trial], search.lease_seconds)
            variant = search.variant(trial.params, f"{name}/{trial.number}")
            root = search.target.with_variant(variant)
            described = _describe(search, trial.params)
            value = objective_value(root, search.metric) if all(s.complete() for s in dag(root)) else None
            if value is not None:
                _tell(found, trial, root, value, "reused", search.metric)
                _say(f"trial {trial.number}: {described}: reused {_model(root).name}, {search.metric} {value:.4g}")
                finished += 1
                continue
            log = paths.search_journal(name).parent / f"trial-{trial.number:04d}.log"
            _say(f"trial {trial.number}: {described}: running (log {log})")
            pool.start(trial.number, list(search.luigi_argv), variant, log)
            running[trial.number] = (trial, root, trained(root), time.monotonic())
            busy += 1
        if not pool.busy():
            return failed
        if time.monotonic() - renewed > search.lease_seconds / 4:
            study.lease([trial for trial, *_ in running.values()], search.lease_seconds)
            renewed = time.monotonic()
        for number, answer in pool.finished(timeout=search.lease_seconds / 4):
            trial, root, reused, started = running.pop(number)
            failed += not _settle(found, search, trial, root, reused, answer, time.monotonic() - started)


def _model(root: Stage) -> Path:
    return next(stage.output_dir() for stage in dag(root) if stage.task_family == "TrainEstimator")


def _tell(found: Any, trial: Any, root: Stage, value: float, outcome: str, metric: str) -> None:
    """Tell the study a trial's result; a reused training's evaluations too (from its history), for the pruner."""
    model = _model(root)
    if outcome == "reused":
        maximise = found.direction.name == "MAXIMIZE"
        try:
            history = json.loads((model / layout.HISTORY).read_text())
        except (OSError, ValueError):
            history = []
        for entry in history:
            reported = pruning.intermediate_value(entry.get("eval", {}), metric, maximise)
            if reported is not None:
                trial.report(reported, int(entry["step"]))
    trial.set_user_attr(study.OUTCOME, outcome)
    trial.set_user_attr(study.RUN, model.name)
    found.tell(trial, value)


def _settle(
    found: Any, search: Search, trial: Any, root: Stage, reused: bool, answer: dict[str, Any], seconds: float
) -> bool:
    """Tell the study how a trial that ran ended; False when it failed (not pruned)."""
    import optuna

    number = trial.number
    frozen = found.get_trials(deepcopy=False)[number]
    if frozen.state.is_finished():  # another search found its lease run out (this one was held up that long)
        _say(f"trial {number}: ended after another search had marked it interrupted (--lease {search.lease_seconds:g})")
        return True
    value = objective_value(root, search.metric)
    if value is not None:
        outcome = "reused" if reused else "complete"
        _tell(found, trial, root, value, outcome, search.metric)
        _say(f"trial {number}: {outcome}, {search.metric} {value:.4g} ({seconds:.1f} s)")
        return True
    frozen = found.get_trials(deepcopy=False)[number]  # again: the training recorded where it was pruned
    step = frozen.user_attrs.get(pruning.PRUNED_AT)
    if step is not None:
        trial.set_user_attr(study.OUTCOME, "pruned")
        found.tell(trial, state=optuna.trial.TrialState.PRUNED)
        last = frozen.intermediate_values.get(step)
        shown = f", {search.metric} {last:.4g}" if last is not None else ""
        _say(f"trial {number}: pruned at step {step}{shown} ({seconds:.1f} s)")
        return True
    trial.set_user_attr(study.OUTCOME, "failed")
    found.tell(trial, state=optuna.trial.TrialState.FAIL)
    why = answer.get("error") or f"Luigi: {answer.get('status')}"
    _say(f"trial {number}: failed ({why}); its log says why")
    return False


def objective_value(root: Stage, metric: str) -> float | None:
    """The objective as the trial's evaluation recorded it, or None when it has none published."""
    evaluation = next(stage for stage in dag(root) if stage.task_family == "EvaluateEstimator")
    if not evaluation.complete():
        return None
    marker = markers.read_marker(evaluation.output_dir()) or {}
    value = marker.get("info", {}).get("validation", {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def folders(root: Stage) -> dict[str, Path]:
    """Every stage of a trial's DAG and its output folder, upstream first."""
    return {stage.task_family: stage.output_dir() for stage in dag(root)}


def trained(root: Stage) -> bool:
    """Whether the trial's model is trained and published already (the trial then trains nothing)."""
    return all(stage.complete() for stage in dag(root) if stage.task_family == "TrainEstimator")


def gpu_pool() -> int:
    """The `gpu` pool of luigi.cfg's [resources]: the trainings one scheduler runs at once."""
    return max(1, int(luigi.configuration.get_config().getint("resources", "gpu", 1)))
