"""The names inside a stage's folder: what every stage that writes or reads one agrees on.

Apart from `paths.py` (where the folders are), because these names are part of
what a stage writes: a change here changes outputs, and the stages that use a
name have it in their code identity. Figures' file names are with the figures
(evaluation/figures.py), so adding one reruns PlotInference only.
"""

from __future__ import annotations

from pathlib import Path

# The staging folder beside a stage's final one, while it is written (core/publish.py).
STAGING_SUFFIX = ".partial"

# Inside a shards folder.
MANIFEST = "manifest.json"
SOURCE_SHA256 = "source_sha256.jsonl"  # of each source file (an image) read, one JSON line each
SPLITS = ("train", "validation")

# Inside a model_dir.
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = f"{CHECKPOINTS}/best"  # with early stopping: the weights of the best evaluation
EVENTS = "events"
HISTORY = "history.json"
KERAS_MODEL = "model.keras"
SAVED_MODEL = "saved_model"
TRAIN_CONFIG = "train_config.json"  # the configuration and the manifest it trained on

# Inside an evaluation's folder.
METRICS = "metrics.json"


def shard_name(split: str, index: int, count: int) -> str:
    """Relative path of one shard inside a shards folder."""
    return f"{split}/{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_files(folder: Path, split: str) -> list[Path]:
    """The shards of one split, sorted (the evaluation order)."""
    return sorted((folder / split).glob("*.tfrecord"))
