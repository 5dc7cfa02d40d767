"""The Estimator's export: a trained model leaves the model_dir as `model.keras` and a SavedModel.

`model.keras` is what evaluation, figures and Keras users load; the SavedModel
(`model.export`) is what a serving client calls.
"""

from __future__ import annotations

from pathlib import Path

import keras

from pipeline import layout


def export(model: keras.Model, model_dir: Path) -> None:
    """Write `model.keras` (for Keras) and a SavedModel (for serving)."""
    model.save(model_dir / layout.KERAS_MODEL)
    model.export(str(model_dir / layout.SAVED_MODEL), verbose=False)
