"""A search's Optuna study, in its journal file under the artifact root (imports Optuna when called).

`searches/<study>/study.journal` (paths.search_journal): Optuna's JournalFileBackend,
whose appends are serialised by a lock file that works on shared storage too, so
several hosts that see the root add trials to one study. Each trial records who
asked for it (`asked_by`: host and pid), until when its search vouches for it
(`lease_until`, renewed while it runs) and how it ended (`outcome`: complete,
reused, pruned, failed or interrupted). A running trial whose search is gone was
interrupted: of this host, its search's process is gone; of any host, its lease ran
out (Optuna's heartbeat is RDBStorage's only: JournalStorage has none). It is then
marked so, failed, and its values are asked again first.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import ParameterError
from pipeline.training import pruning

OUTCOME = "outcome"  # complete, reused, pruned, failed or interrupted
ASKED_BY = "asked_by"  # {"host": ..., "pid": ...}
RUN = "run"  # the model folder of a trial that trained (or reused) one
RETRY_OF = "retry_of"  # an interrupted trial's values asked again: the number of the trial interrupted
LEASE = "lease_until"  # seconds since the epoch: until when the search that asked for a trial vouches for it
LEASE_SECONDS = 120.0  # a search renews its trials' leases every quarter of this


def storage(name: str, under: Path | None = None) -> Any:
    """Optuna's journal storage of the study `name` (`under`: that artifact root, not the configured one)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = paths.search_journal(name, under)
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


def lease(trials: Iterable[Any], seconds: float) -> None:
    """Vouch for the running `trials` (optuna.Trial) for `seconds` more: their search is alive."""
    until = time.time() + seconds
    for trial in trials:
        trial.set_user_attr(LEASE, until)


def _gone(trial: Any, me: dict[str, Any], this_process_too: bool) -> str | None:
    """Why a running trial's search is gone (where it ran), or None while it may be running."""
    tag = trial.user_attrs.get(ASKED_BY, {})
    until = trial.user_attrs.get(LEASE)
    here = tag.get("host") == me["host"]
    if here and tag.get("pid") == me["pid"]:
        return "this search stopped" if this_process_too else None
    if here and not _alive(int(tag.get("pid", 0))):
        return "its search stopped"
    if isinstance(until, (int, float)) and time.time() > until:  # of any host (and a pid reused here)
        ago = time.time() - until
        return f"its search on {tag.get('host', '?')} stopped renewing its lease {ago:.0f} s ago"
    return None


def recover(study: Any, this_process_too: bool = False) -> list[tuple[int, str]]:
    """Mark the running trials whose search is gone as interrupted, and ask for their values again first (their
    trainings resume from their checkpoints); return their numbers, and why each.

    Gone: a search of this host whose process is not alive, or a search of any host that has not
    renewed the trial's lease (`lease`). `this_process_too`: this process's own running trials as
    well (it is being stopped).
    """
    import optuna

    me = host_tag()
    found = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        why = _gone(trial, me, this_process_too)
        if why is None:
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, OUTCOME, "interrupted")
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError):  # another search (another host) failed it first, and asks it again
            continue
        # Not Optuna's skip_if_exists: it compares with every trial, this one included, and always skips.
        if not any(t.user_attrs.get(RETRY_OF) == trial.number for t in study.get_trials(deepcopy=False)):
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
        found.append((trial.number, why))
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


def load(name: str, under: Path | None = None) -> Any:
    """The existing study `name` (for its report, and the runs table)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=storage(name, under))


@dataclass(frozen=True)
class Membership:
    """A run's place in a search: the study, the trial that trained or reused it, its state and objective."""

    study: str
    trial: int
    state: str  # complete or reused (a pruned or failed trial publishes no model)
    objective: str  # the metric, e.g. validation.mse
    value: float | None


def studies(root: Path) -> list[str]:
    """The names of the studies under the artifact root `root` (folders of `searches/` holding a journal)."""
    found = (root / paths.SEARCHES).glob(f"*/{paths.SEARCH_JOURNAL}")
    return sorted(journal.parent.name for journal in found if journal.is_file())


def memberships(root: Path, names: list[str]) -> dict[str, Membership]:
    """Model folder name -> its trial in the studies `names` under `root` (imports Optuna when there is one).

    A model in several trials (trained by one, reused by others) is shown by the trial that trained it,
    else by the first; the studies are read in the order given.
    """
    found: dict[str, Membership] = {}
    for name in names:
        loaded = load(name, root)
        objective = str(loaded.user_attrs.get("definition", {}).get("objective", "objective"))
        for row in rows(loaded):
            if not row.run or row.state not in ("complete", "reused"):
                continue
            known = found.get(row.run)
            if known is None or (known.state != "complete" and row.state == "complete"):
                found[row.run] = Membership(name, row.number, row.state, objective, row.value)
    return found
