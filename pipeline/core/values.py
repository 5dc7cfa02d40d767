"""Values as the identity sees them: one spelling per value, its digest, flattened names.

Shared by the identity (core/identity.py), the training's TensorBoard hparams
and train_config.json, and the runs table: one copy, in no module that markers,
publishing or the console would pull into a stage's code identity.
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def normalise(value: Any) -> Any:
    """Return `value` as plain JSON data with one spelling per value.

    Numbers are compared as numbers (JSON writes a float as its shortest
    round-trip form, so `0.01` and `1e-2` are the same parameter), tuples
    become lists and mappings are sorted by key.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): normalise(v) for k, v in sorted(value.items())}
    return str(value)


def digest(data: Any) -> str:
    """Return the sha256 hex digest of `data` serialised as canonical JSON."""
    text = json.dumps(normalise(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def show(value: Any) -> str:
    """A parameter's value as the explanations of a change write it (status, gc, diff)."""
    return "(unset)" if value is None else json.dumps(value)


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted names: {"a": {"b": 1}} -> {"a.b": 1}; other values kept."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, Mapping):
            flat.update(flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat
