"""The one contract between the ETL and training: what a source's shards hold.

`Schema` is known before the shards are written (CreateShards' checks, the
resolved training configuration); the manifest is what the written shards
record (feature spec, counts, problem, classes, statistics), read by training,
evaluation and figures. Standard library only: on the scheduling path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import layout


@dataclass(frozen=True)
class Schema:
    """What a source's shards will hold, known before they are written."""

    problem: str  # problems.get(problem)
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...] = ()  # classification
    num_examples: Mapping[str, int] = field(default_factory=dict)  # by split, when known before writing
    source: str = ""  # the source's kind: "sine", "image_folder", "table" (the table defaults follow it)
    inputs: Mapping[str, Any] = field(default_factory=dict)  # named inputs: name -> {"dtype", "shape"}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Schema:
        """The schema of written shards, from their manifest."""
        features = manifest["features"]
        shape = manifest.get("input_shape") or manifest.get("image_shape") or features[manifest["inputs"]]["shape"]
        return cls(
            manifest["problem"],
            tuple(shape),
            tuple(manifest.get("class_names", ())),
            {split: entry["num_examples"] for split, entry in manifest["splits"].items()},
            manifest.get("source", ""),
            {name: manifest["features"][name] for name in manifest["inputs"]} if named_inputs(manifest) else {},
        )


def named_inputs(manifest: Mapping[str, Any]) -> bool:
    """Whether the inputs are several named features (a table's columns) rather than one tensor."""
    return not isinstance(manifest["inputs"], str)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a shards folder."""
    with open(folder / layout.MANIFEST) as f:
        data: dict[str, Any] = json.load(f)
    return data
