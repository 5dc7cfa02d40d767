"""Each stage's code identity holds what can change its output, and nothing else (issue 18).

A stage's code identity is the normalised source of every module in the import
closure of its `code_entry` modules (core/identity.code_closure). These tests pin
each closure as a list of modules, edit a copy of the package the way a
developer would, and check which stages' code digests change; they also check
that no module imports itself back and that subpackages import one way only.
No TensorFlow, no training: digests of source files.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from pipeline import paths, tasks
from pipeline.core import identity
from pipeline.core.stage import Stage

STAGES = (
    tasks.MakeShapes,
    tasks.CreateShards,
    tasks.TrainEstimator,
    tasks.EvaluateEstimator,
    tasks.PlotInference,
    tasks.ExportModel,
)
ORDER = [cls.__name__ for cls in STAGES]


def _below(name: str) -> list[str]:
    """A stage reruns, and so do those below it (whose upstream identity changes)."""
    return [cls.__name__ for cls in STAGES if cls.__name__ == name or name in cls.families_above()]


BELOW = {name: _below(name) for name in ORDER}
BELOW["MakeShapes"] = ["MakeShapes"]  # its images are CreateShards' source: their listing, not this code, counts

# The pinned closures, without the package prefix. A change that pulls a module into a
# stage's closure fails here: if it belongs there, add it in the same commit and say why.
SHARED_BY_TRAINING_AND_BELOW = [
    "builders.py",  # finding and importing a network builder
    "core/__init__.py",
    "core/modules.py",  # where a builder's module is
    "errors.py",
    "layout.py",  # names inside a stage folder
    "networks.py",
    "problems.py",
    "schema.py",
    "training/__init__.py",
    "training/inputs.py",  # how shards are read
    "training/preprocessing.py",  # a table's imputation, scaling and lookups: layers of the model it loads
]
CLOSURES = {
    "MakeShapes": ["etl/shapes.py"],
    "CreateShards": [
        "core/__init__.py",
        "core/invocation.py",  # a source is listed and read once per command
        "core/listing.py",
        "core/modules.py",  # where a source function's module is
        "errors.py",
        "etl/__init__.py",
        "etl/columns.py",  # a table's column kinds, statistics and vocabularies
        "etl/image_folder.py",
        "etl/shards.py",
        "etl/sources.py",
        "etl/tables.py",
        "etl/tfrecords.py",  # TFRecords the user has
        "etl/user_source.py",  # a source function of the user's
        "layout.py",
        "runtime/__init__.py",
        "runtime/orphans.py",  # the shard writers die with the stage
        "schema.py",
    ],
    "TrainEstimator": sorted(
        [
            *SHARED_BY_TRAINING_AND_BELOW,
            "core/values.py",  # train_config.json and the TensorBoard hparams: normalised, flattened
            "runtime/__init__.py",
            "runtime/clock.py",  # the ETA in its progress messages
            "runtime/phases.py",  # the crash trials' kill points
            "training/cluster.py",
            "training/compiling.py",  # the optimizer, loss, metrics and callbacks it is compiled and run with
            "training/config.py",
            "training/estimator.py",
            "training/export.py",
            "training/hparams.py",
            "training/image_decoding.py",  # the serving signature decodes image bytes as the ETL did
            "training/multiworker.py",
            "training/pruning.py",  # a search's trial: each evaluation reported, a pruned training stopped
            "training/signatures.py",  # the SavedModel's serving signatures: raw inputs in, class names out
        ]
    ),
    "EvaluateEstimator": sorted(
        [
            *SHARED_BY_TRAINING_AND_BELOW,
            "core/values.py",  # the gate reads the report's numbers by flattened name
            "evaluation/__init__.py",
            "evaluation/evaluate.py",
            "evaluation/gate.py",  # the quality gate's verdict is part of metrics.json
            "evaluation/metrics.py",
            "evaluation/scoring.py",
        ]
    ),
    "PlotInference": sorted(
        [
            *SHARED_BY_TRAINING_AND_BELOW,
            "evaluation/__init__.py",
            "evaluation/evaluate.py",  # predictions through the same model loading as the evaluation
            "evaluation/figures.py",
            "evaluation/metrics.py",
            "evaluation/scoring.py",
        ]
    ),
    # A copy of files: the errors it raises and the copy. Not the gate (it reads the verdict EvaluateEstimator
    # wrote, an upstream output) nor the training's export (an upstream output too).
    "ExportModel": ["errors.py", "serving/export_model.py"],
}


def closure(stage: type[Stage], root: Path) -> dict[str, Path]:
    return identity.code_closure(list(stage.code_entry), [str(root)])


def digests(root: Path) -> dict[str, dict[str, str]]:
    """Each stage's code digests, computed from the package below `root`."""
    return {
        stage.__name__: {label: identity.file_code_digest(path) for label, path in closure(stage, root).items()}
        for stage in STAGES
    }


def test_each_stage_closure_is_pinned() -> None:
    found = {
        stage.__name__: [label.removeprefix("pipeline/") for label in closure(stage, paths.PROJECT_DIR)]
        for stage in STAGES
    }
    assert found == CLOSURES


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(paths.PACKAGE_DIR, root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _rerun_after(root: Path, file: str, old: str, new: str) -> set[str]:
    """Edit `file` of the copy (old -> new, once), and return the stages that would rerun: those whose
    code digests changed, and every stage below one of them (its upstream identity changed)."""
    path = root / "pipeline" / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {file}: update this test"
    before = digests(root)
    path.write_text(text.replace(old, new))
    try:
        after = digests(root)
    finally:
        path.write_text(text)
    changed = {stage for stage in ORDER if before[stage] != after[stage]}
    return {below for stage in changed for below in BELOW[stage]}


ALL_BUT_DEMO = {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference", "ExportModel"}
CASES = [
    # (file, old, new, what reruns)
    pytest.param(
        "evaluation/figures.py",
        'CURVES_PNG = "training_curves.png"',
        'CURVES_PNG = "training_curves.png"\nHISTOGRAM_PNG = "histogram.png"',
        {"PlotInference"},
        id="a-new-figure",
    ),
    pytest.param(
        "evaluation/figures.py",
        '"classification": Shown(_classification_figures, loss_name="cross-entropy", curve_metric="accuracy")',
        '"classification": Shown(_classification_figures, loss_name="log loss", curve_metric="accuracy")',
        {"PlotInference"},
        id="a-figure-of-one-problem",
    ),
    pytest.param(
        "evaluation/evaluate.py",
        "def evaluate(model_dir: Path, shards_dir: Path, batch_size: int = 256)",
        "def evaluate(model_dir: Path, shards_dir: Path, batch_size: int = 512)",
        {"EvaluateEstimator", "PlotInference", "ExportModel"},
        id="the-evaluation",
    ),
    pytest.param(
        "evaluation/scoring.py",
        'headline_metrics = ("mse", "rmse", "mae")',
        'headline_metrics = ("mse", "mae")',
        {"EvaluateEstimator", "PlotInference", "ExportModel"},
        id="a-problem's-report",
    ),
    pytest.param(
        "training/inputs.py",
        "def eval_dataset(",
        "def _unused() -> None:\n    pass\n\n\ndef eval_dataset(",
        {"TrainEstimator", "EvaluateEstimator", "PlotInference", "ExportModel"},
        id="how-shards-are-read",
    ),
    pytest.param(
        "etl/shards.py",
        "def encode_example(",
        "def _unused() -> None:\n    pass\n\n\ndef encode_example(",
        ALL_BUT_DEMO,
        id="how-shards-are-written",
    ),
    pytest.param(
        "training/estimator.py",
        "def best_step(",
        "def _unused() -> None:\n    pass\n\n\ndef best_step(",
        {"TrainEstimator", "EvaluateEstimator", "PlotInference", "ExportModel"},
        id="the-training",
    ),
    pytest.param(
        "evaluation/gate.py",
        'AT_LEAST, AT_MOST = "at_least", "at_most"',
        'AT_LEAST, AT_MOST = "at_least", "at_most"\nX = 1',
        {"EvaluateEstimator", "PlotInference", "ExportModel"},
        id="the-quality-gate",
    ),
    pytest.param(
        "serving/export_model.py",
        'RECORD = "export.json"',
        'RECORD = "exported.json"',
        {"ExportModel"},
        id="the-export",
    ),
]
NOTHING = [
    pytest.param(file, id=file)
    for file in (
        "core/markers.py",
        "core/publish.py",
        "core/stage.py",
        "runtime/locks.py",
        "runtime/console.py",
        "cli/results.py",
        "cli/exiting.py",
        "cli/status.py",
        "cli/gc.py",
        "cli/runs.py",
        "cli/report.py",
        "cli/interruption.py",
        "training/process.py",
        "runtime/quiet_tensorflow.py",
        "core/parameters.py",
        "experiments/selection.py",
        "experiments/runs.py",
        "experiments/report.py",
        "experiments/baselines.py",  # which run is the baseline: recorded in the verdict, not in an identity
        "paths.py",
        "__main__.py",
    )
]


@pytest.mark.parametrize(("file", "old", "new", "expected"), CASES)
def test_an_edit_reruns_the_stages_that_run_that_code(
    copy_root: Path, file: str, old: str, new: str, expected: set[str]
) -> None:
    assert _rerun_after(copy_root, file, old, new) == expected


@pytest.mark.parametrize("file", NOTHING)
def test_infrastructure_and_commands_rerun_nothing(copy_root: Path, file: str) -> None:
    """Markers, publishing, locks, console output, the results block, the commands: in no closure."""
    assert (
        _rerun_after(
            copy_root, file, "from __future__ import annotations\n", "from __future__ import annotations\nX = 1\n"
        )
        == set()
    )


# --- the import graph ---------------------------------------------------------------------


def _module_name(path: Path) -> str:
    rel = path.relative_to(paths.PROJECT_DIR).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in it, functions too), from the AST."""
    files = {_module_name(p): p for p in paths.PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and target != "pipeline":  # the package: the loader
                    edges.add(target)
        graph[name] = edges
    return graph


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = import_graph()
    graph.pop("pipeline", None)  # pipeline/__init__.py only loads the tasks for `luigi --module pipeline`
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    circles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert circles == []


# Subpackages, lowest first: a module may import from its own subpackage, a lower one, or the top level.
LAYERS = {
    "runtime": 0,
    "core": 1,
    "etl": 2,
    "training": 2,
    "evaluation": 3,
    "serving": 3,  # ExportModel's copy: beside the evaluation, neither importing the other
    "experiments": 4,
    "cli": 5,
}


def test_subpackages_import_one_way() -> None:
    wrong = []
    for module, imported in import_graph().items():
        parts = module.split(".")
        if len(parts) < 3:
            continue  # the top level: the DAG and the domain
        for target in imported:
            target_parts = target.split(".")
            if len(target_parts) < 3 or target_parts[1] == parts[1]:
                continue
            if LAYERS[target_parts[1]] >= LAYERS[parts[1]]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_subpackage_init_files_are_empty() -> None:
    """An __init__ that imported its modules would join every closure that touches the package."""
    for init in paths.PACKAGE_DIR.glob("*/__init__.py"):
        assert init.read_text() == "", init
