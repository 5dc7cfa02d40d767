"""Trained models side by side, read from their markers: `python -m pipeline runs`.

A run is one published model_dir (a folder under `models/`) joined with the
stages above it (its shards, and what those read), found through the
identities each marker records under `upstream`, and the stages that read it
(its evaluation and its plots: of each stage, the newest folder whose
`upstream` names the model, then what reads those). Everything comes from the
`_SUCCESS.json` markers: no TensorFlow is imported and no Luigi task is built,
so a root of 1,000 runs is tabled in well under a second (bench/runs_table.py).

Nothing here knows a parameter's name. Whatever a stage's marker records under
`params` is a parameter, keyed `Stage.name` with nested mappings flattened to
dotted names (`TrainEstimator.learning_rate`, `TrainEstimator.network_args.units`).
The metrics are the floating-point numbers the stages below the model returned
(EvaluateEstimator's headline validation metrics, e.g. `validation.mse`);
integers there are counts (`num_examples`), not metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline import layout, paths
from pipeline.core import markers
from pipeline.core import remote as remotes
from pipeline.core.values import flatten
from pipeline.errors import ParameterError
from pipeline.experiments import study

# What Stage adds to every marker's info (and, for stages that use TensorFlow, who imported it): not results.
TIMINGS = ("started_at", "finished_at", "elapsed_seconds", "cpu_seconds", "tensorflow_import")
MIN_PREFIX = 4  # the fewest leading characters of an identity that name a folder (`diff`, `report RUN`)


@dataclass(frozen=True)
class Artifact:
    """One published stage folder and its parsed `_SUCCESS.json` marker."""

    folder: Path
    marker: dict[str, Any]

    @property
    def stage(self) -> str:
        return str(self.marker.get("stage", "?"))

    @property
    def identity(self) -> str:
        return str(self.marker.get("identity", ""))

    @property
    def info(self) -> dict[str, Any]:
        info = self.marker.get("info")
        return info if isinstance(info, dict) else {}

    @property
    def created(self) -> float:
        return float(self.marker.get("created", 0.0))

    @property
    def upstream(self) -> dict[str, str]:
        """Identity digests of the stages this one read, by stage."""
        upstream = self.marker.get("upstream")
        return {str(k): str(v) for k, v in upstream.items()} if isinstance(upstream, dict) else {}

    @property
    def params(self) -> dict[str, Any]:
        params = self.marker.get("params")
        return flatten(params) if isinstance(params, Mapping) else {}


@dataclass(frozen=True)
class Run:
    """A trained model with the stages above it and the stages that read it."""

    model: Artifact
    upstream: tuple[Artifact, ...]  # every stage above the model, farthest first (raw data, shards)
    downstream: tuple[Artifact, ...]  # per stage, the newest folder that read the model (evaluation, plots)
    search: study.Membership | None = None  # the trial of a search that trained (or reused) it

    @property
    def name(self) -> str:
        """The model_dir's name, e.g. `sine-mlp-6b99486025ec`: readable prefix and identity."""
        return self.model.folder.name

    @property
    def identity(self) -> str:
        return self.model.identity

    @property
    def stages(self) -> tuple[Artifact, ...]:
        """Every stage of the run in DAG order."""
        return (*self.upstream, self.model, *self.downstream)

    @cached_property
    def depth(self) -> dict[str, int]:
        """Each stage's place relative to the model: -2 raw data, -1 shards, 0 the model, 1 its evaluation..."""
        count = len(self.upstream)
        depths = {artifact.stage: i - count for i, artifact in enumerate(self.upstream)}
        depths[self.model.stage] = 0
        depths.update({artifact.stage: i + 1 for i, artifact in enumerate(self.downstream)})
        return depths

    @cached_property
    def params(self) -> dict[str, Any]:
        """Every parameter of every stage of the run, keyed `Stage.name`."""
        return {f"{stage.stage}.{name}": value for stage in self.stages for name, value in stage.params.items()}

    @cached_property
    def metrics(self) -> dict[str, float]:
        """The floating-point numbers the stages below the model returned, e.g. `validation.mse`."""
        found: dict[str, float] = {}
        for stage in self.downstream:
            results = {k: v for k, v in stage.info.items() if k not in TIMINGS}
            for name, value in flatten(results).items():
                if isinstance(value, float):
                    found[name] = value
        return found

    def _info(self, stage: str, key: str) -> dict[str, Any]:
        """What the run's `stage` recorded under `key` in its marker's info ({} if nothing)."""
        for artifact in self.downstream:
            if artifact.stage == stage and isinstance(artifact.info.get(key), dict):
                return dict(artifact.info[key])
        return {}

    @property
    def verdict(self) -> str | None:
        """The quality gate's verdict on the model (EvaluateEstimator's): blessed, not blessed, no thresholds set."""
        return self._info("EvaluateEstimator", "verdict").get("status")

    @property
    def export(self) -> str | None:
        """Where ExportModel put the model, `<name>/<version>`, and `forced` when it was forced past the gate."""
        facts = self._info("ExportModel", "export")
        if not facts:
            return None
        return f"{facts.get('name')}/{facts.get('version')}" + (" forced" if facts.get("forced") else "")

    @cached_property
    def seconds(self) -> dict[str, float]:
        """How long each stage took to build, by stage."""
        return {
            stage.stage: float(stage.info["elapsed_seconds"])
            for stage in self.stages
            if isinstance(stage.info.get("elapsed_seconds"), (int, float))
        }

    @cached_property
    def finished_at(self) -> float:
        """When the last stage of the run finished (seconds since the epoch)."""
        return max(float(stage.info.get("finished_at", stage.created)) for stage in self.stages)

    @cached_property
    def label(self) -> dict[str, str]:
        """The name and note the run was given (`--name`, `--note`): those of its newest stage that has one."""
        for stage in sorted(self.stages, key=lambda artifact: artifact.created, reverse=True):
            given = stage.info.get("run")
            if isinstance(given, dict) and given:
                return {str(key): str(value) for key, value in given.items()}
        return {}

    def figures(self) -> list[Path]:
        """The PNG files of the stages below the model (its plots), in DAG order."""
        return [
            stage.folder / rel
            for stage in self.downstream
            for rel in sorted(stage.marker.get("files", {}))
            if rel.lower().endswith(".png")
        ]

    def history_path(self) -> Path:
        """The model_dir's training curves (`history.json`)."""
        return self.model.folder / layout.HISTORY


@dataclass(frozen=True)
class Index:
    """Every published stage folder under an artifact root, by identity, and who read whom."""

    root: Path
    artifacts: tuple[Artifact, ...]

    @cached_property
    def by_identity(self) -> dict[str, Artifact]:
        return {artifact.identity: artifact for artifact in self.artifacts}

    @cached_property
    def readers(self) -> dict[str, list[Artifact]]:
        """Identity -> the stage folders whose `upstream` names it."""
        readers: dict[str, list[Artifact]] = defaultdict(list)
        for artifact in self.artifacts:
            for digest in artifact.upstream.values():
                readers[digest].append(artifact)
        return readers

    def above(self, artifact: Artifact) -> tuple[Artifact, ...]:
        """The published stages `artifact` read, and what they read, farthest first (gone ones skipped)."""
        order: list[Artifact] = []

        def visit(current: Artifact) -> None:
            for digest in current.upstream.values():
                found = self.by_identity.get(digest)
                if found is not None and found not in order:
                    visit(found)
                    order.append(found)

        visit(artifact)
        return tuple(order)

    def below(self, artifact: Artifact) -> tuple[Artifact, ...]:
        """Per stage, the newest folder that read `artifact` (or read one of those), in DAG order."""
        chosen: dict[str, Artifact] = {}
        frontier = [artifact.identity]
        while frontier:
            newest: dict[str, Artifact] = {}
            for digest in frontier:
                for reader in self.readers.get(digest, []):
                    if reader.stage in chosen:
                        continue
                    if reader.stage not in newest or reader.created > newest[reader.stage].created:
                        newest[reader.stage] = reader
            chosen.update(newest)
            frontier = [reader.identity for reader in newest.values()]
        # A stage runs after the stages it reads, so creation order is DAG order.
        return tuple(sorted(chosen.values(), key=lambda a: a.created))

    @cached_property
    def models(self) -> Path:
        """The folder of the published model_dirs."""
        return paths.stage_parents(self.root)["models"]

    def is_model(self, artifact: Artifact) -> bool:
        """Whether `artifact` is a published model_dir of this root (a run's model)."""
        return artifact.folder.parent == self.models and self.by_identity.get(artifact.identity) == artifact

    def run(self, artifact: Artifact) -> Run:
        """The run of the model_dir `artifact`: it, the stages above it and the stages that read it."""
        return Run(model=artifact, upstream=self.above(artifact), downstream=self.below(artifact))

    def runs(self) -> list[Run]:
        """One run per published model_dir, by the time it finished."""
        runs = [self.run(artifact) for artifact in self.artifacts if artifact.folder.parent == self.models]
        return sorted(runs, key=lambda run: (run.finished_at, run.name))

    def find(self, reference: str) -> Artifact:
        """The stage folder a user names: a path to it, its folder name, or a prefix of its identity.

        Raises ParameterError naming the reference when nothing, or more than one folder, matches.
        """
        path = Path(reference)
        if path.is_dir():
            marker = markers.read_marker(path)
            if marker is None:
                raise ParameterError(
                    f"{reference} holds no readable {markers.MARKER}: not a published stage folder. "
                    f"Received: {reference!r}"
                )
            return self.by_identity.get(str(marker.get("identity")), Artifact(path, marker))
        matches = [a for a in self.artifacts if _refers_to(reference, a.folder.name, a.identity)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ParameterError(
                f"No published stage folder under {self.root} has this name or identity prefix "
                f"(`python -m pipeline runs` lists the models). Received: {reference!r}"
            )
        names = ", ".join(sorted(a.folder.name for a in matches)[:5])
        raise ParameterError(f"{reference!r} matches {len(matches)} folders ({names}): give more of the identity.")


def _refers_to(reference: str, folder_name: str, digest: str) -> bool:
    """Whether a user's `reference` names the stage folder `folder_name` of identity `digest`: its path or
    name (the last part of the path is compared), or at least MIN_PREFIX leading characters of the identity."""
    key = reference.rstrip("/").rsplit("/", 1)[-1]
    return key == folder_name or (len(key) >= MIN_PREFIX and digest.startswith(key))


def _published(parent: Path, raw: bool) -> Iterable[Artifact]:
    """The published stage folders in `parent` (not staging folders, nor folders set aside)."""
    try:
        entries = list(os.scandir(parent))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if not entry.is_dir():
            continue
        marker = markers.read_marker(Path(entry.path))
        if marker is None or not isinstance(marker.get("identity"), str):
            continue
        # Published folders end in their identity; `<name>.partial` and `<name>.old-*` do not.
        # Raw data (MakeShapes' images) lives under its own name.
        if raw or entry.name.endswith("-" + marker["identity"][:12]):
            yield Artifact(Path(entry.path), marker)


def index(root: Path) -> Index:
    """Read every published stage folder's marker under the artifact root `root` (folders are named absolute)."""
    root = root.resolve()
    parents = paths.stage_parents(root)
    artifacts = [a for kind, parent in parents.items() for a in _published(parent, raw=kind == "raw")]
    remote = remotes.configured()
    if remote is not None:  # and the runs of other hosts, from their markers in the remote
        local = {artifact.folder.relative_to(root).as_posix() for artifact in artifacts}
        for rel, marker in remote.published().items():
            if rel not in local:
                artifacts.append(Artifact(root / rel, marker))
    return Index(root, tuple(artifacts))


def collect(root: Path, search: str | None = None) -> list[Run]:
    """Every trained model under the artifact root `root`, as a `Run`, oldest first, each with its trial
    where a search's study under the root trained or reused it (`search`: only that study's runs).

    ParameterError for a `search` that names no study under the root (listing those there are).
    """
    runs = index(root).runs()
    names = study.studies(root)
    if search is not None:
        if search not in names:
            there = f"the studies there: {', '.join(names)}" if names else "there is none"
            raise ParameterError(f"--search {search}: no study of that name under {root / paths.SEARCHES} ({there}).")
        names = [search]
    trials = study.memberships(root, names) if names else {}
    runs = [dataclasses.replace(run, search=trials.get(run.name)) for run in runs]
    return [run for run in runs if run.search is not None] if search is not None else runs


def select(runs: Sequence[Run], references: Sequence[str]) -> list[Run]:
    """The runs named by model folder path, folder name or identity prefix, in the order given.

    Raises ParameterError naming a reference that matches no run or several.
    """
    chosen = []
    for reference in references:
        matches = [run for run in runs if _refers_to(reference, run.name, run.identity)]
        if len(matches) != 1:
            found = "no trained model" if not matches else f"{len(matches)} models"
            raise ParameterError(
                f"RUN names {found}: give a model folder, its name or at least {MIN_PREFIX} hex digits of its identity "
                f"(`python -m pipeline runs` lists them). Received: {reference!r}"
            )
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


# --- the table ----------------------------------------------------------------------

SEARCH_KEYS = ("trial", "state", "objective")  # a search's run: its trial's number, state and objective


def search_value(membership: study.Membership, key: str) -> Any:
    """A search's cell of a run: its study (`search`), its trial number, state or objective value."""
    return {
        "search": membership.study,
        "trial": membership.trial,
        "state": membership.state,
        "objective": membership.value,
    }[key]


@dataclass(frozen=True)
class Column:
    """One column of the runs table: `key` is what --sort-by, JSON and CSV use, `header` what is printed."""

    key: str
    header: str
    kind: str  # "run", "label" (name, note), "search" (its trial), "param", "metric", "gate", "finished", "seconds"

    def value(self, run: Run) -> Any:
        if self.kind == "run":
            return run.name
        if self.kind == "gate":  # the verdict, or the export
            return getattr(run, self.key)
        if self.kind == "search":
            return None if run.search is None else search_value(run.search, self.key)
        if self.kind == "label":
            return run.label.get(self.key)
        if self.kind == "param":
            return run.params.get(self.key)
        if self.kind == "metric":
            return run.metrics.get(self.key)
        if self.kind == "finished":
            return run.finished_at
        return run.seconds.get(self.key.removeprefix("seconds."))


def _hashable(value: Any) -> Any:
    """A value to compare and sort by: scalars as they are (typed: true is not 1), the rest as JSON."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return (type(value).__name__, value)
    return ("json", json.dumps(value, sort_keys=True))


def _stages(runs: Sequence[Run]) -> list[str]:
    """Every stage of the runs in DAG order (raw data, shards, model, evaluation, plots)."""
    depth: dict[str, int] = {}
    for run in runs:
        for stage, place in run.depth.items():
            depth[stage] = min(place, depth.get(stage, place))
    return sorted(depth, key=depth.__getitem__)  # stable: ties keep their first appearance


def _param_keys(runs: Sequence[Run]) -> list[str]:
    """Every parameter key of the runs, stage by stage in DAG order, by name within a stage."""
    keys = {key for run in runs for key in run.params}
    rank = {stage: i for i, stage in enumerate(_stages(runs))}
    return sorted(keys, key=lambda key: (rank.get(key.split(".", 1)[0], len(rank)), key))


def differing(runs: Sequence[Run], keys: Sequence[str] | None = None) -> list[str]:
    """Parameter keys whose value is not the same in every run (absent counts as a value), in DAG order.

    `keys` are the runs' `_param_keys`, when the caller has them already.
    """
    keys = _param_keys(runs) if keys is None else keys
    return [key for key in keys if len({_hashable(run.params.get(key)) for run in runs}) > 1]


def _resolve_swept(keys: Sequence[str], swept: Sequence[str]) -> list[str]:
    """Swept names (`Stage.name`, `name`, or `--Stage-name`) as those of the parameter keys `keys` they name."""
    found = []
    for name in swept:
        name = name.lstrip("-")
        if "." not in name and "-" in name:  # --TrainEstimator-learning-rate
            stage, _, rest = name.partition("-")
            name = f"{stage}.{rest.replace('-', '_')}"
        for key in keys:
            rest = key.split(".", 1)[1]
            if name in (key, rest) or key.startswith(name + ".") or rest.startswith(name + "."):
                found.append(key)
    return list(dict.fromkeys(found))


def columns(runs: Sequence[Run], all_params: bool = False, swept: Sequence[str] | None = None) -> list[Column]:
    """The table's columns: run, parameters (swept ones first, then those that differ, or all), metrics,
    when it finished, and seconds per stage."""
    keys = _param_keys(runs)
    shown = _resolve_swept(keys, swept or [])
    shown += [key for key in (keys if all_params else differing(runs, keys)) if key not in shown]
    # A parameter is headed by its name alone unless another stage has one of that name.
    names = [key.split(".", 1)[1] for key in keys]
    params = [
        Column(key, key if names.count(key.split(".", 1)[1]) > 1 else key.split(".", 1)[1], "param") for key in shown
    ]
    metric_keys = sorted({key for run in runs for key in run.metrics})
    # `validation.mse` is headed `mse` when every metric is a validation metric.
    first = {key.split(".", 1)[0] for key in metric_keys}
    common = next(iter(first)) + "." if len(first) == 1 and all("." in k for k in metric_keys) else ""
    metrics = [Column(key, key.removeprefix(common), "metric") for key in metric_keys]
    stages = [stage for stage in _stages(runs) if any(stage in run.seconds for run in runs)]
    seconds = [Column(f"seconds.{stage}", f"{stage} s", "seconds") for stage in stages]
    labels = [Column(key, key, "label") for key in ("name", "note") if any(key in run.label for run in runs)]
    gate = [Column(key, key, "gate") for key in ("verdict", "export") if any(getattr(run, key) for run in runs)]
    in_searches = {run.search.study for run in runs if run.search is not None}
    trial_keys = [*(["search"] if len(in_searches) > 1 else []), *SEARCH_KEYS] if in_searches else []
    return [
        Column("run", "run", "run"),
        *labels,
        *[Column(key, key, "search") for key in trial_keys],
        *params,
        *metrics,
        *gate,
        Column("finished", "finished", "finished"),
        *seconds,
    ]


def sort_runs(runs: Sequence[Run], column: Column, reverse: bool = False) -> list[Run]:
    """Runs ordered by a column's values; runs without a value come last either way."""
    present = [run for run in runs if column.value(run) is not None]
    missing = [run for run in runs if column.value(run) is None]

    def key(run: Run) -> tuple[int, Any]:
        value = column.value(run)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, value)
        return (1, json.dumps(value, sort_keys=True))

    return sorted(present, key=key, reverse=reverse) + missing


def find_column(table_columns: Sequence[Column], name: str) -> Column:
    """The column whose key or header is `name`; ParameterError listing the choices otherwise."""
    for column in table_columns:
        if name in (column.key, column.header):
            return column
    choices = ", ".join(column.header for column in table_columns)
    raise ParameterError(f"--sort-by names no column of the table; columns: {choices}. Received: {name!r}")


def format_value(column: Column, value: Any) -> str:
    """A cell as printed: metrics to 4 significant digits, parameters exactly, times to the minute."""
    if value is None:
        return "-"
    if column.kind == "metric" or (column.kind == "search" and isinstance(value, float)):
        return f"{value:.4g}"
    if column.kind == "finished":
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))
    if column.kind == "seconds":
        return f"{value:.1f}"
    if column.kind == "param" and (not isinstance(value, str) or not value):
        return json.dumps(value)  # lists as [100, 100], true/false, and "" for an empty string
    return str(value)


def table(
    runs: Sequence[Run],
    sort_by: str | None = None,
    all_params: bool = False,
    swept: Sequence[str] | None = None,
    reverse: bool = False,
) -> tuple[list[Column], list[Run]]:
    """The columns and the ordered rows that `format_table`, the CSV and the report show."""
    table_columns = columns(runs, all_params, swept)
    ordered = list(runs)
    if sort_by is not None:
        try:
            column = find_column(table_columns, sort_by)
        except ParameterError:  # a parameter that does not differ is not shown, but can order the rows
            shown = {c.key for c in table_columns}
            hidden = [c for c in columns(runs, all_params=True) if c.key not in shown]
            matches = [c for c in hidden if sort_by in (c.key, c.header)]
            if len(matches) != 1:
                raise
            column = matches[0]
        ordered = sort_runs(ordered, column, reverse)
    elif reverse:
        ordered.reverse()
    return table_columns, ordered


def format_table(
    runs: Sequence[Run],
    sort_by: str | None = None,
    all_params: bool = False,
    swept: Sequence[str] | None = None,
    reverse: bool = False,
) -> str:
    """The runs as an aligned text table (like `dvc exp show`): one row per trained model.

    Columns: the model folder (its identity), the parameters that differ between
    the rows (every parameter with `all_params`; `swept` ones first and always),
    the headline metrics, when the run finished and how many seconds each stage
    took. `sort_by` names a column by key or header; numbers sort as numbers. No runs: the header alone
    (`python -m pipeline runs` says where it found none).
    """
    table_columns, ordered = table(runs, sort_by, all_params, swept, reverse)
    cells = [[format_value(c, c.value(run)) for c in table_columns] for run in ordered]
    widths = [max([len(c.header), *(len(row[i]) for row in cells)]) for i, c in enumerate(table_columns)]
    right = [c.kind in ("metric", "seconds") for c in table_columns]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line([c.header for c in table_columns]), *(line(row) for row in cells)])


def to_csv(
    runs: Sequence[Run],
    sort_by: str | None = None,
    all_params: bool = False,
    swept: Sequence[str] | None = None,
    reverse: bool = False,
) -> str:
    """The table as CSV: headed by column keys, values unformatted (lists as JSON, times in epoch seconds)."""
    table_columns, ordered = table(runs, sort_by, all_params, swept, reverse)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in table_columns])
    for run in ordered:
        values = [c.value(run) for c in table_columns]
        writer.writerow(["" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v for v in values])
    return out.getvalue()


def as_record(run: Run) -> dict[str, Any]:
    """Everything known about a run as JSON data: every parameter, metric, time and folder."""
    return {
        "run": run.name,
        **run.label,
        "identity": run.identity,
        **({} if run.search is None else {key: search_value(run.search, key) for key in ("search", *SEARCH_KEYS)}),
        **({} if run.search is None else {"objective_metric": run.search.objective}),
        "params": run.params,
        "metrics": run.metrics,
        "verdict": run.verdict,
        "export": run.export,
        "finished_at": run.finished_at,
        "seconds": run.seconds,
        "folders": {stage.stage: str(stage.folder) for stage in run.stages},
        "figures": [str(path) for path in run.figures()],
    }


def to_json(runs: Sequence[Run], sort_by: str | None = None, reverse: bool = False) -> str:
    """The runs as a JSON list of `as_record`, ordered as the table would be."""
    _, ordered = table(runs, sort_by, all_params=True, reverse=reverse)
    return json.dumps([as_record(run) for run in ordered], indent=1, sort_keys=True)
