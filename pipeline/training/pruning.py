"""A search's trial, seen from its training: each evaluation reported, and a stop when the pruner says so.

`python -m pipeline search` gives the training its trial as the non-significant
parameter `--TrainEstimator-trial STUDY/NUMBER` (so the trial does not change the
training's identity); the estimator then adds `Reporter` to its callbacks, after the
one that writes the checkpoint of the step. At every evaluation the reporter tells the
trial the objective's value on the validation set at that global step (the Keras
metric of the objective's name; the eval loss when Keras has none, negated when the
search maximises) and asks the study's pruner. When the pruner says stop, it records
the step and raises `TrialPrunedError`: the training ends at once, as any failed stage,
so its worker, its `gpu` resource and its GPU slot are free; its staging folder keeps
the checkpoint of that step, and it is never published. Training the same
configuration again resumes from there.

The study is Optuna's journal file under the artifact root (TrainEstimator passes its
path); the search records its pruner and metric in the study (`STUDY_ATTRIBUTES`).
Optuna is imported only when a training has a trial.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from typing import Any

from pipeline.errors import ParameterError, TrialPrunedError

STUDY_ATTRIBUTES = "pruning"  # the study's user attribute: {"metric": "mse", "pruner": [name, arguments]}
PRUNED_AT = "pruned_at_step"  # the trial's user attribute its pruned training sets
# The pruners by their name on the command line, and Optuna's class of each.
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
}


def parse_pruner(text: str) -> tuple[str, dict[str, Any]]:
    """`median`, or with Optuna's keyword arguments `median(n_startup_trials=2)`: checked by building it."""
    match = re.match(r"^\s*([a-z]+)\s*(?:\((.*)\))?\s*$", text, re.DOTALL)
    if not match or match[1] not in PRUNERS:
        raise ParameterError(
            f"search: unknown --pruner {text}. Expected one of {', '.join(PRUNERS)}, "
            "optionally with Optuna's arguments, e.g. median(n_startup_trials=2)."
        )
    arguments: dict[str, Any] = {}
    if match[2] and match[2].strip():
        try:
            call = ast.parse(f"f({match[2]})", mode="eval").body
            assert isinstance(call, ast.Call) and not call.args
            arguments = {str(k.arg): ast.literal_eval(k.value) for k in call.keywords}
        except (SyntaxError, ValueError, AssertionError):
            raise ParameterError(
                f"search: --pruner {text}: its arguments are keywords with values, e.g. "
                "median(n_startup_trials=2, n_warmup_steps=100)."
            ) from None
    try:
        make_pruner(match[1], arguments)
    except (TypeError, ValueError) as error:
        raise ParameterError(f"search: --pruner {text} is not accepted: {error}") from None
    return match[1], arguments


def make_pruner(name: str, arguments: dict[str, Any]) -> Any:
    """The Optuna pruner `name` with `arguments` (imports Optuna)."""
    import optuna

    pruner: Any = getattr(optuna.pruners, PRUNERS[name])(**arguments)
    return pruner


def intermediate_value(evaluation: Mapping[str, Any], metric: str, maximise: bool) -> float | None:
    """What a trial is told of one evaluation (`{"loss": ..., "mse": ...}`): the objective's Keras metric,
    else the eval loss (negated when the search maximises); None when it is not a finite number."""
    value = evaluation.get(metric)
    if value is None and "loss" in evaluation:
        value = -evaluation["loss"] if maximise else evaluation["loss"]
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def reporter(trial: Mapping[str, Any]) -> Any:
    """The Keras callback that reports to a search's trial: `{"study": name, "number": n, "journal": path}`."""
    import keras
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name, number = str(trial["study"]), int(trial["number"])
    storage = JournalStorage(JournalFileBackend(str(trial["journal"])))
    settings = optuna.load_study(study_name=name, storage=storage).user_attrs[STUDY_ATTRIBUTES]
    study = optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(*settings["pruner"]))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    maximise = study.direction == optuna.study.StudyDirection.MAXIMIZE

    class Reporter(keras.callbacks.Callback):
        """Report each evaluation to the trial; stop the training when its pruner says so."""

        def __init__(self) -> None:
            super().__init__()
            self.trial = optuna.trial.Trial(study, trial_id)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            step = int(self.model.optimizer.iterations.numpy())
            evaluation = {k[4:]: v for k, v in (logs or {}).items() if k.startswith("val_")}
            value = intermediate_value(evaluation, settings["metric"], maximise)
            if value is None:
                return  # a diverged loss stops the training itself
            self.trial.report(value, step)
            if self.trial.should_prune():
                self.trial.set_user_attr(PRUNED_AT, step)
                raise TrialPrunedError(
                    f"Trial {number} of the search {name} was pruned at step {step} "
                    f"({settings['metric']} {value:.4g}): its checkpoints stay in the staging folder, and training "
                    "this configuration again resumes from them."
                )

    return Reporter()
