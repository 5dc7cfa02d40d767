"""What differs between two stage outputs: `python -m pipeline diff A B`.

Two published folders (two models, usually) are compared part by part of
their identities, as their markers record them: which parameters (from what
to what), which code files, which TensorFlow/Keras versions, which source
folders, and which upstream stages. An upstream stage that differs is compared
in turn, up the DAG; one with the same identity whose bytes differ (a rerun
that was not deterministic) is named as such. For two models, the headline
metrics of their evaluations follow. Markers only: no TensorFlow.
"""

from __future__ import annotations

import time

from pipeline.core.values import show
from pipeline.experiments.runs import Artifact, Column, Index, format_value


def _describe(artifact: Artifact) -> str:
    finished = artifact.info.get("finished_at", artifact.created)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(finished)))
    return f"{artifact.folder} ({artifact.stage}, finished {when})"


def compare(a: Artifact, b: Artifact) -> list[str]:
    """How two stage folders' identities differ, one line per difference, upstream identities included."""
    lines = []
    if a.stage != b.stage:
        lines.append(f"stage: {a.stage} -> {b.stage}")
    params_a, params_b = a.params, b.params
    for name in sorted(set(params_a) | set(params_b)):
        if params_a.get(name) != params_b.get(name):
            lines.append(f"parameter {name}: {show(params_a.get(name))} -> {show(params_b.get(name))}")
    for part, say in (("code", "code {name}"), ("versions", "version {name}"), ("sources", "source folder {name}")):
        before, after = a.marker.get(part) or {}, b.marker.get(part) or {}
        for name in sorted(set(before) | set(after)):
            old, new = before.get(name), after.get(name)
            if old != new:
                if part == "versions":
                    change = f"{show(old)} -> {show(new)}"
                elif old is None or new is None:
                    change = "only in A" if new is None else "only in B"
                else:
                    change = f"changed ({old[:12]} -> {new[:12]})"
                lines.append(f"{say.format(name=name)}: {change}")
    up_a, up_b = a.upstream, b.upstream
    content_a, content_b = a.marker.get("upstream_content") or {}, b.marker.get("upstream_content") or {}
    for name in sorted(set(up_a) | set(up_b)):
        if up_a.get(name) != up_b.get(name):
            lines.append(f"upstream {name}: {str(up_a.get(name))[:12]} -> {str(up_b.get(name))[:12]}")
        elif content_a.get(name) != content_b.get(name):
            lines.append(
                f"upstream {name} data: same identity, other bytes read "
                f"({str(content_a.get(name))[:12]} -> {str(content_b.get(name))[:12]})"
            )
    return lines


def diff(index: Index, a: Artifact, b: Artifact) -> list[str]:
    """The whole explanation `python -m pipeline diff` prints, A's and B's stages up the DAG, then results."""
    lines = [f"A: {_describe(a)}", f"B: {_describe(b)}"]
    if a.identity == b.identity:
        same = a.marker.get("content_digest") == b.marker.get("content_digest")
        lines.append("Same identity: same parameters, code, versions and upstream stages.")
        lines.append("Same content." if same else "Other content: a rerun wrote other bytes.")
        return lines
    pending, seen = [(a, b)], set()
    while pending:
        left, right = pending.pop(0)
        if (left.identity, right.identity) in seen:
            continue
        seen.add((left.identity, right.identity))
        title = left.stage if left.stage == right.stage else f"{left.stage} / {right.stage}"
        names = f"{left.folder.name} -> {right.folder.name}"
        lines.append(f"{title} ({names}):")
        lines += [f"  {line}" for line in compare(left, right) or ["no difference in its own identity"]]
        for name in sorted(set(left.upstream) & set(right.upstream)):
            if left.upstream[name] == right.upstream[name]:
                continue
            up_left = index.by_identity.get(left.upstream[name])
            up_right = index.by_identity.get(right.upstream[name])
            if up_left is None or up_right is None:
                gone = left.upstream[name] if up_left is None else right.upstream[name]
                lines.append(f"{name}: the folder of {gone[:12]} is gone (removed by gc?): not compared")
            else:
                pending.append((up_left, up_right))
    lines += _results(index, a, b)
    return lines


def _results(index: Index, a: Artifact, b: Artifact) -> list[str]:
    """Headline metrics of two models' evaluations, side by side (nothing for other stages)."""
    if not (index.is_model(a) and index.is_model(b)):
        return []
    metrics_a, metrics_b = index.run(a).metrics, index.run(b).metrics
    columns = [Column(name, name, "metric") for name in sorted(set(metrics_a) | set(metrics_b))]
    if not columns:
        return []
    return ["results:"] + [
        f"  {c.key}: {format_value(c, metrics_a.get(c.key))} -> {format_value(c, metrics_b.get(c.key))}"
        for c in columns
    ]
