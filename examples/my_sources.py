"""Three sources of your own (`--CreateShards-source my_sources:FUNCTION`), as docs/your-experiment.md shows.

Each returns, or yields, examples: dicts from a feature name to a value (a
number, a string, a NumPy array of fixed shape), the label under the name
given as `--CreateShards-label-column`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import numpy as np


def npz_arrays(path: str, inputs: str = "x", labels: str = "y") -> Iterator[dict[str, Any]]:
    """Arrays from an .npz file: example i is {inputs: data[inputs][i], labels: data[labels][i]}."""
    with np.load(path) as data:
        features, targets = data[inputs], data[labels]
    for feature, target in zip(features, targets, strict=True):
        yield {inputs: feature, labels: target.item()}


def text_lines(path: str) -> Iterator[dict[str, Any]]:
    """Text classification: each line of a file is `label<TAB>text`."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            label, _, text = line.rstrip("\n").partition("\t")
            yield {"text": text, "label": label}


def sqlite_rows(path: str, query: str) -> Iterator[dict[str, Any]]:
    """Rows of a SQLite query, one example each, its columns as features (read as the query returns them)."""
    connection = sqlite3.connect(path)
    try:
        cursor = connection.execute(query)
        names = [column[0] for column in cursor.description]
        for row in cursor:
            yield dict(zip(names, row, strict=True))
    finally:
        connection.close()
