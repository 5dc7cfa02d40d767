"""Where artifacts live: the one module that joins artifact paths.

Three roots, as in cookiecutter-data-science: `data/` (shards), `models/`
(model dirs) and `reports/` (metrics and figures), below `[paths] root` in
luigi.cfg (default: the working directory). Inside a stage's folder, the file
names below are the layout every module agrees on.
"""

from __future__ import annotations

import os
from pathlib import Path

import luigi

PROJECT_DIR = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent

# Inside a shards folder.
MANIFEST = "manifest.json"
SOURCE_SHA256 = "source_sha256.jsonl"  # of each source file (an image) read, one JSON line each
SPLITS = ("train", "validation")

# Inside a model_dir.
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = "checkpoints/best"  # with early stopping: the weights of the best evaluation
EVENTS = "events"
HISTORY = "history.json"
KERAS_MODEL = "model.keras"
SAVED_MODEL = "saved_model"

# Inside a reports folder.
METRICS = "metrics.json"
PREDICTIONS_PNG = "predictions.png"  # regression on one input: predictions against it
PREDICTED_VS_TRUE_PNG = "predicted_vs_true.png"  # regression: predicted against true, and residuals
CURVES_PNG = "training_curves.png"
CONFUSION_PNG = "confusion_matrix.png"  # images: validation confusion matrix
IMAGES_PNG = "validation_images.png"  # images: a grid of validation images, true and predicted class

# Below the reports root: the page `python -m pipeline report` writes by default.
RUNS_REPORT = "runs.html"


class paths(luigi.Config):  # noqa: N801 (Luigi names config sections after the class)
    """`[paths]` in luigi.cfg: where the artifact roots are."""

    root = luigi.Parameter(default=".", description="Folder holding data/, models/ and reports/.")


def artifact_root(kind: str) -> Path:
    """The root folder for `kind` ("data", "models" or "reports")."""
    if kind not in ("data", "models", "reports"):
        raise ValueError(f"Unknown artifact kind. Expected data, models or reports. Received: kind={kind!r}")
    return Path(paths().root) / kind


def stage_dir(kind: str, name: str) -> Path:
    """The published folder of one stage output, e.g. `data/shards/sine-<id>`."""
    sub = {"data": "shards", "models": "", "reports": ""}[kind]
    return artifact_root(kind) / sub / name if sub else artifact_root(kind) / name


def stage_folders() -> list[Path]:
    """Every folder stages wrote (published, staging or set aside), in all artifact roots."""
    parents = [stage_dir(kind, "-").parent for kind in ("data", "models", "reports")]
    return sorted(p for parent in parents if parent.is_dir() for p in parent.iterdir() if p.is_dir())


def stage_parents(root: Path) -> dict[str, Path]:
    """The folders below an artifact root that hold stage folders, by kind: shards, models, reports and raw data."""
    return {
        "data": root / "data" / "shards",
        "models": root / "models",
        "reports": root / "reports",
        "raw": root / "data" / "raw",
    }


def lock_path(folder: Path) -> Path:
    """The lock file that serialises runs writing one output folder (kept out of the artifact roots)."""
    locks = Path(paths().root) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    return locks / f"{folder.parent.name}-{folder.name}.lock"


def publish_log() -> Path:
    """A file every publish appends a byte to: its size tells a running invocation that an output appeared."""
    return Path(paths().root) / ".locks" / "published"


def raw_dir(name: str) -> Path:
    """A folder of raw data, e.g. `data/raw/shapes`: written once, never modified."""
    return artifact_root("data") / "raw" / name


def shard_name(split: str, index: int, count: int) -> str:
    """Relative path of one shard inside a shards folder."""
    return f"{split}/{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_files(folder: Path, split: str) -> list[Path]:
    """The shards of one split, sorted (the evaluation order)."""
    return sorted((folder / split).glob("*.tfrecord"))


def user_roots() -> list[str]:
    """Folders a user's modules (a network of their own) are found in: the working directory, then PYTHONPATH."""
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    roots = []
    for root in [os.getcwd(), *extra]:
        root = os.path.abspath(root)
        if root not in roots and root != os.fspath(PROJECT_DIR):
            roots.append(root)
    return roots


def cache_dir() -> Path:
    """Small remembered verdicts (a user's network checked once per version), under the artifact root."""
    return Path(paths().root) / ".cache"
