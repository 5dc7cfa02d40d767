"""The baseline a quality gate compares a model with: a run the user names, or the best so far on the same data.

Read from the published evaluations' markers and `metrics.json` (experiments/runs.py's index), no
TensorFlow. "best" is resolved when the evaluation runs, among the evaluations of other models on
the same shards (the same CreateShards identity); what it resolved to is recorded in the verdict.
It is not part of the evaluation's identity: a better run published later does not make an older
verdict stale (rerun it against the new best with --EvaluateEstimator-force).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import layout
from pipeline.errors import ParameterError
from pipeline.evaluation import gate
from pipeline.experiments.runs import Artifact, Index, index

BEST = "best"
EVALUATION = "EvaluateEstimator"


def _report(artifact: Artifact) -> dict[str, Any] | None:
    try:
        report = json.loads((artifact.folder / layout.METRICS).read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _evaluation_of(found: Index, artifact: Artifact, reference: str) -> Artifact:
    """The evaluation `reference` names: itself, or the newest evaluation of the model it names."""
    if artifact.stage == EVALUATION:
        return artifact
    if found.is_model(artifact):
        evaluations = [a for a in found.readers.get(artifact.identity, []) if a.stage == EVALUATION]
        if evaluations:
            return max(evaluations, key=lambda a: a.created)
        raise ParameterError(
            f"--EvaluateEstimator-baseline {reference} names a run with no evaluation yet: run "
            "luigi --module pipeline EvaluateEstimator for it first, or name another run."
        )
    raise ParameterError(
        f"--EvaluateEstimator-baseline names a trained model (a run of `python -m pipeline runs`) or its evaluation, "
        f"not a {artifact.stage} folder. Received: {reference!r}"
    )


def named_run(root: Path, reference: str) -> str:
    """The model folder name of the run `reference` names (path, folder name or identity prefix), checked now."""
    found = index(root)
    evaluation = _evaluation_of(found, found.find(reference), reference)
    model = found.by_identity.get(evaluation.upstream.get("TrainEstimator", ""))
    return model.folder.name if model is not None else evaluation.folder.name


def find(root: Path, given: str, report: dict[str, Any], require: Any, shards: str, model: str) -> dict[str, Any]:
    """The baseline for gate.verdict: {"given", "run", "evaluation", "same_data", "report"}, or {"given", "none"}.

    `shards` and `model`: the identities of the CreateShards and TrainEstimator this evaluation reads
    (an evaluation of the same model is never its own baseline).
    """
    found = index(root)
    if given != BEST:
        evaluation = _evaluation_of(found, found.find(given), given)
        chosen, theirs = evaluation, _report(evaluation)
        if theirs is None:
            raise ParameterError(f"--EvaluateEstimator-baseline {given}: {evaluation.folder} has no readable metrics.")
    else:
        metric = gate.compared_metrics(report, require)[0]
        way = gate.parse_requirements(require).get(metric, (gate.direction(metric), 0.0))[0]
        candidates = []
        for artifact in found.artifacts:
            if artifact.stage != EVALUATION or artifact.upstream.get("CreateShards") != shards:
                continue
            if artifact.upstream.get("TrainEstimator") == model:
                continue
            theirs = _report(artifact)
            value = gate.numbers(theirs).get(metric) if theirs and theirs.get("problem") == report["problem"] else None
            if value is not None:
                candidates.append((value if way == gate.AT_LEAST else -value, -artifact.created, artifact, theirs))
        if not candidates:
            return {"given": given, "none": "no other run on the same data yet: no baseline"}
        _, _, chosen, theirs = max(candidates, key=lambda candidate: candidate[:2])
    model_artifact = found.by_identity.get(chosen.upstream.get("TrainEstimator", ""))
    return {
        "given": given,
        "run": model_artifact.folder.name if model_artifact else chosen.folder.name,
        "evaluation": chosen.folder.name,
        "same_data": chosen.upstream.get("CreateShards") == shards,
        "report": theirs,
    }
