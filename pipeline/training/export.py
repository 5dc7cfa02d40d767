"""The Estimator's export: a trained model leaves the model_dir as `model.keras` and a SavedModel.

`model.keras` is what evaluation, figures and Keras users load; the SavedModel,
with signatures that take what a client has (signatures.py), is what a serving client calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from pipeline import layout
from pipeline.training import signatures


def export(model: keras.Model, manifest: dict[str, Any], model_dir: Path) -> None:
    """Write `model.keras` (for Keras) and a SavedModel (for serving: `serving_default` and `raw`)."""
    model.save(model_dir / layout.KERAS_MODEL)
    signatures.export(model, manifest, model_dir / layout.SAVED_MODEL)
