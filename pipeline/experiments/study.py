"""A search's Optuna study, in its journal file under the artifact root (imports Optuna when called).

`searches/<study>/study.journal` (paths.search_journal): Optuna's JournalFileBackend,
whose appends are serialised by a lock file that works on shared storage too, so
several hosts that see the root add trials to one study. Each trial records who
asked for it (`asked_by`: host and pid) and how it ended (`outcome`: complete,
reused, pruned, failed or interrupted); a trial of this host whose search process is
gone was interrupted: it is marked so and its values are asked again first.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from pipeline import paths
from pipeline.errors import ParameterError
from pipeline.training import pruning

OUTCOME = "outcome"  # complete, reused, pruned, failed or interrupted
ASKED_BY = "asked_by"  # {"host": ..., "pid": ...}
RUN = "run"  # the model folder of a trial that trained (or reused) one


def storage(name: str) -> Any:
    """Optuna's journal storage of the study `name`."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = paths.search_journal(name)
    journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(journal)))


def open_study(
    name: str,
    definition: dict[str, Any],
    direction: str,
    sampler: str,
    seed: int,
    pruner: tuple[str, dict[str, Any]],
    metric: str,
) -> Any:
    """The study `name`, created when new; ParameterError when it holds another search (`definition`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen: Any = (
        optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        if sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    study = optuna.create_study(
        study_name=name,
        storage=storage(name),
        sampler=chosen,
        pruner=pruning.make_pruner(*pruner),
        direction=optuna.study.StudyDirection[direction.upper()],
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("definition")
    if recorded is None:
        study.set_user_attr("definition", definition)
    elif recorded != definition:
        changed = sorted(key for key in definition if recorded.get(key) != definition[key])
        raise ParameterError(
            f"search: the study {name} is of another search (its {', '.join(changed)} differ). "
            "Name another with --study, or leave --study out to have one named after the search."
        )
    # What the trainings' pruning reads (the pruner may change from one session to the next).
    study.set_user_attr(pruning.STUDY_ATTRIBUTES, {"metric": metric, "pruner": [pruner[0], pruner[1]]})
    return study


def host_tag() -> dict[str, Any]:
    """Who asks for a trial: this host and process."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def recover(study: Any, this_process_too: bool = False) -> list[int]:
    """Mark this host's running trials whose search is gone as interrupted, and ask for their values again
    first (their trainings resume from their checkpoints); return their numbers.

    `this_process_too`: this process's own running trials as well (it is being stopped). A trial
    running on another host is left alone: its search may still be running.
    """
    import optuna

    me = host_tag()
    found = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        tag = trial.user_attrs.get(ASKED_BY, {})
        if tag.get("host") != me["host"]:
            continue
        mine = tag.get("pid") == me["pid"]
        if (mine and not this_process_too) or (not mine and _alive(int(tag.get("pid", 0)))):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, OUTCOME, "interrupted")
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=True)
        found.append(trial.number)
    return found


def counts(study: Any) -> tuple[int, int]:
    """(trials finished, trials running anywhere): what the budget `--trials` counts.

    Finished: complete, reused, pruned and failed; an interrupted trial does not count (its
    values are tried again).
    """
    import optuna

    states = optuna.trial.TrialState
    finished = running = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (states.COMPLETE, states.PRUNED) or (
            trial.state == states.FAIL and trial.user_attrs.get(OUTCOME) != "interrupted"
        ):
            finished += 1
        elif trial.state == states.RUNNING:
            running += 1
    return finished, running


@dataclass(frozen=True)
class Row:
    """One trial as the tables show it."""

    number: int
    state: str  # complete, reused, pruned, failed, interrupted, running
    value: float | None  # the objective (a pruned trial: its last reported value)
    params: dict[str, Any]
    run: str  # the model folder's name, or ""
    step: int | None  # a pruned trial: the step it stopped at


def rows(study: Any) -> list[Row]:
    """Every trial of the study but the waiting ones, by number."""
    import optuna

    found = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.WAITING:
            continue
        state = trial.user_attrs.get(OUTCOME) or trial.state.name.lower()
        value = trial.value
        if value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        found.append(
            Row(
                number=trial.number,
                state=state,
                value=value,
                params=dict(trial.params),
                run=str(trial.user_attrs.get(RUN, "")),
                step=trial.user_attrs.get(pruning.PRUNED_AT),
            )
        )
    return sorted(found, key=lambda row: row.number)


def load(name: str) -> Any:
    """The existing study `name` (for its report)."""
    import optuna

    return optuna.load_study(study_name=name, storage=storage(name))
