"""The Estimator's EVAL and PREDICT on a trained model_dir: whole-split reports and predictions.

EvaluateEstimator's report and PlotInference's predictions both read the
exported `model.keras` (in safe mode) and the shards in order, unshuffled and
finite, through the training's own input pipeline (training/inputs.py), so
the numbers are exact over every example. Nothing here trains: a change here
reruns the evaluation and the figures, never the training.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline import builders, layout
from pipeline.errors import DataError
from pipeline.evaluation.scoring import of as scoring_of
from pipeline.schema import read_manifest
from pipeline.training import inputs, preprocessing


def load_model(model_dir: Path) -> keras.Model:
    """Reload the exported Keras model in safe mode (no arbitrary code is run).

    A network of the user's is imported first, so that layers of theirs that
    it registers with Keras (`keras.saving.register_keras_serializable`) load,
    and so are the losses and metrics of theirs the training was compiled with.
    A file that is not a whole Keras archive (truncated, overwritten) is a
    DataError naming it and the fix, not Keras' or zipfile's own error.
    """
    try:
        config = json.loads((model_dir / layout.TRAIN_CONFIG).read_text()).get("config", {})
    except FileNotFoundError:
        config = {}
    network = config.get("network", "")
    if ":" in network:
        with contextlib.suppress(ValueError, ImportError, AttributeError):  # gone: the model loads without it
            builders.load(network)
    builders.register_user_objects(config)  # the user's losses and metrics, which the compiled model names
    path = model_dir / layout.KERAS_MODEL
    try:
        # The pipeline's own preprocessing layers (a table's imputation), by their registered name.
        custom = {"pipeline>ImputeAndScale": preprocessing.ImputeAndScale}
        return keras.saving.load_model(path, custom_objects=custom, safe_mode=True)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{layout.KERAS_MODEL} in {model_dir} cannot be loaded ({type(error).__name__}: {error}). "
            "Rebuild it with: luigi --module pipeline Repro --local-scheduler"
        ) from None


def evaluate(model_dir: Path, shards_dir: Path, batch_size: int = 256) -> dict[str, Any]:
    """The problem's report over every example of each split (scoring.Scoring.report).

    Regression: MSE, RMSE and MAE; classification: accuracy, per-class
    precision / recall / F1 and the confusion matrix. Computed from the
    predictions over the whole split, with the number of examples. The model
    is loaded once; each split is read once (the examples' ids with them).
    """
    manifest = read_manifest(shards_dir)
    scoring = scoring_of(manifest["problem"])
    class_names = manifest.get("class_names", [])
    model = load_model(model_dir)
    results: dict[str, Any] = {"problem": manifest["problem"]}
    if class_names:
        results["class_names"] = class_names
    for split in ("validation", "train"):
        p = predict(model_dir, shards_dir, split, batch_size, keep_inputs=False, model=model)
        ids = p["ids"].tolist() if "ids" in p else None
        results[split] = scoring.report(p["labels"], p["predictions"], class_names, ids)
        chosen = chosen_metrics(model, p["labels"], p["predictions"], batch_size)
        chosen = {name: value for name, value in chosen.items() if name not in results[split]}
        results[split].update(chosen)
        results["chosen_metrics"] = sorted(chosen)
    return results


def chosen_metrics(model: keras.Model, labels: np.ndarray, predictions: np.ndarray, batch: int) -> dict[str, float]:
    """The compiled metrics of `model` (the problem's, and those chosen) over a whole split, batch by batch.

    Keras' streaming metrics, updated with every batch of the split's labels
    and predictions, are exact over the whole split; the loss is not one.
    """
    if not model.compiled:
        return {}
    model.reset_metrics()
    result: dict[str, Any] = {}
    for start in range(0, len(labels), batch):
        end = start + batch
        result = model.compute_metrics(None, labels[start:end], predictions[start:end], sample_weight=None)
    return {name: float(value) for name, value in result.items() if name != "loss"}


def predict(
    model_dir: Path,
    shards_dir: Path,
    split: str,
    batch_size: int = 256,
    keep_inputs: bool = True,
    *,
    model: keras.Model | None = None,
) -> dict[str, np.ndarray]:
    """Inputs, labels, predictions and ids of a whole split, in shard order, from one pass over it.

    Batch by batch; with `keep_inputs=False` the inputs are not kept (a
    split of images would not fit in memory), only labels, predictions and
    ids. "ids": what names each example (an image's file, a table's line) as
    strings, where the manifest names an `example_id`. `model`: the model of
    `model_dir` already loaded (load_model), or None to load it.
    """
    manifest = read_manifest(shards_dir)
    if model is None:
        model = load_model(model_dir)
    with_ids = bool(manifest.get("example_id"))
    xs, ys, ps, ids = [], [], [], []
    with inputs.corrupt_shards_named(shards_dir):
        for batch in inputs.eval_dataset(shards_dir, manifest, split, batch_size, with_ids=with_ids):
            x, y = batch[0], batch[1]
            ps.append(np.asarray(model(x, training=False)))
            ys.append(y.numpy())
            if keep_inputs:  # named inputs (a table's columns): the figure along one input draws a single column
                xs.append(np.reshape(next(iter(x.values())), (-1, 1)) if isinstance(x, dict) else x.numpy())
            if with_ids:
                ids += inputs.decode_ids(batch[2].numpy())
    out = {"labels": np.concatenate(ys), "predictions": np.concatenate(ps)}
    if keep_inputs:
        out["inputs"] = np.concatenate(xs)
    if with_ids:
        out["ids"] = np.asarray(ids, dtype=object)  # Python strings, not fixed-width ones
    return out
