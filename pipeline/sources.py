"""Raw example sources: the seed's noisy sine (and, later, folders of images).

A source returns its examples already shuffled once, globally, and split into
train and validation: the two never mix downstream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

X_MIN, X_MAX = -4 * math.pi, 4 * math.pi


@dataclass(frozen=True)
class SineSource:
    """The seed experiment: y = sin(x) + 1 + N(0, noise_stddev²) on an even grid."""

    num_examples: int = 1024
    noise_stddev: float = 0.1
    validation_fraction: float = 1 / 3
    seed: int = 1234

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.num_examples < 2:
            raise ValueError(f"num_examples must be at least 2. Received: num_examples={self.num_examples}")
        if not 0 < self.validation_fraction < 1 or math.isnan(self.validation_fraction):
            raise ValueError(
                "validation_fraction must be strictly between 0 and 1. "
                f"Received: validation_fraction={self.validation_fraction}"
            )
        if not self.noise_stddev >= 0:
            raise ValueError(f"noise_stddev must be >= 0. Received: noise_stddev={self.noise_stddev}")
        num_validation = self.num_validation
        if num_validation == 0 or num_validation == self.num_examples:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} of num_examples={self.num_examples} "
                "leaves one split empty: choose a fraction that keeps examples on both sides."
            )

    @property
    def to_features(self) -> Any:
        return sine_features

    @property
    def num_validation(self) -> int:
        return int(self.num_examples * self.validation_fraction)

    def splits(self) -> dict[str, dict[str, np.ndarray]]:
        """Columns `x`, `y` (float32, shape [n]) per split, in shuffled order.

        The noise is drawn first and the permutation second from one
        `RandomState(seed)`, as the seed experiment did; the first
        `num_validation` permuted examples are the validation set.
        """
        rs = np.random.RandomState(self.seed)
        x = np.linspace(X_MIN, X_MAX, self.num_examples)
        y = true_function(x) + rs.normal(0.0, self.noise_stddev, self.num_examples)
        order = rs.permutation(self.num_examples)
        val, train = order[: self.num_validation], order[self.num_validation :]
        return {
            "train": {"x": x[train].astype(np.float32), "y": y[train].astype(np.float32)},
            "validation": {"x": x[val].astype(np.float32), "y": y[val].astype(np.float32)},
        }

    def rows(self) -> dict[str, list[tuple[float, float]]]:
        """(x, y) pairs per split, in shuffled order: what the shard writers take."""
        return {split: list(zip(c["x"].tolist(), c["y"].tolist(), strict=True)) for split, c in self.splits().items()}

    def manifest(self) -> dict[str, Any]:
        """What downstream stages need to know of this source."""
        return {
            "source": "sine",
            "task": "regression",
            "features": {"x": {"dtype": "float32", "shape": [1]}, "y": {"dtype": "float32", "shape": [1]}},
            "inputs": "x",
            "label": "y",
        }


def sine_features(row: tuple[float, float]) -> dict[str, list[float]]:
    """The Example features of one (x, y) row."""
    return {"x": [row[0]], "y": [row[1]]}


def true_function(x: np.ndarray) -> np.ndarray:
    """The noiseless target, sin(x) + 1."""
    return np.sin(x) + 1.0
