"""Figures (Matplotlib, object-oriented API, Agg backend).

Plot functions draw on an `Axes` they are given; `write_*` functions make a
figure, save it as PNG and close it. Nothing here is ever shown on a screen.
`write_figures` draws the figures that show the shards' problem (`SHOWN_BY`),
each by its entry in `FIGURES`. The figures' file names live here, with what
draws them: adding a figure reruns PlotInference only.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from pipeline import layout, problems
from pipeline.evaluation import evaluate
from pipeline.schema import named_inputs, read_manifest
from pipeline.training import inputs

# The figures' files inside a plots folder.
PREDICTIONS_PNG = "predictions.png"  # regression on one input: predictions against it
PREDICTED_VS_TRUE_PNG = "predicted_vs_true.png"  # regression: predicted against true, and residuals
CURVES_PNG = "training_curves.png"
CONFUSION_PNG = "confusion_matrix.png"  # classification: validation confusion matrix
IMAGES_PNG = "validation_images.png"  # images: a grid of validation images, true and predicted class


def plot_regression(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    y_pred: np.ndarray,
    title: str,
    reference: dict[str, Any] | None = None,
    names: tuple[str, str] = ("x", "y"),
) -> None:
    """Examples, the model's predictions along the one input and, if given, the noiseless curve."""
    x, y, y_pred = np.ravel(x), np.ravel(y), np.ravel(y_pred)
    order = np.argsort(x)
    ax.scatter(x, y, s=8, alpha=0.45, color="tab:blue", label=f"examples (n={len(x)})")
    if reference:
        ax.plot(reference["x"], reference["y"], color="black", lw=1.2, ls="--", label=reference["label"])
    ax.plot(x[order], y_pred[order], color="tab:red", lw=1.8, label="model prediction")
    mse = float(np.mean((y_pred - y) ** 2))
    ax.set_title(f"{title}: MSE {mse:.4f}")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    _legend_below(ax)


def _title(text: str, width: int) -> str:
    """A title whose lines are wrapped at `width` characters (at "; " between settings where it can)."""
    lines = []
    for line in text.split("\n"):
        lines += textwrap.wrap(line, width, break_on_hyphens=False) or [""]
    return "\n".join(lines)


def _legend_below(ax: Axes) -> None:
    """The legend under the axes, outside the data (constrained layout makes room for it)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3, fontsize="small", frameon=False)


def plot_predicted_vs_true(ax: Axes, y: np.ndarray, y_pred: np.ndarray, title: str, label: str = "y") -> None:
    """Each example's prediction against its true value, on the diagonal where they agree."""
    y, y_pred = np.ravel(y), np.ravel(y_pred)
    low, high = float(min(y.min(), y_pred.min())), float(max(y.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="black", lw=1.0, ls="--", label="predicted = true")
    ax.scatter(y, y_pred, s=10, alpha=0.5, color="tab:blue", label=f"examples (n={len(y)})")
    ax.set_title(f"{title}: MSE {float(np.mean((y_pred - y) ** 2)):.4g}")
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_aspect("equal", adjustable="datalim")
    _legend_below(ax)


def plot_residuals(ax: Axes, y: np.ndarray, y_pred: np.ndarray, title: str, label: str = "y") -> None:
    """Residuals (true - predicted) against the prediction: a pattern here is what the model missed."""
    y, y_pred = np.ravel(y), np.ravel(y_pred)
    ax.axhline(0.0, color="black", lw=1.0, ls="--", label="no error")
    ax.scatter(y_pred, y - y_pred, s=10, alpha=0.5, color="tab:red", label=f"residuals (n={len(y)})")
    ax.set_title(f"{title}: residuals")
    ax.set_xlabel(f"predicted {label}")
    ax.set_ylabel(f"true - predicted {label}")
    _legend_below(ax)


def plot_curves(ax: Axes, history: Sequence[dict[str, Any]], metric: str = "loss", log: bool = True) -> None:
    """Train and eval `metric` against the global step (log scale unless `log` is False)."""
    steps = [h["step"] for h in history]
    for split, style in (("train", "-o"), ("eval", "-s")):
        values = [h[split].get(metric, np.nan) for h in history]
        ax.plot(steps, values, style, ms=3, label=f"{split} {metric}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("global step")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    _legend_below(ax)


def plot_confusion(ax: Axes, matrix: np.ndarray, class_names: Sequence[str]) -> None:
    """Counts of true (rows) against predicted (columns) classes; colour = share of the true class."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if shares[row, col] > 0.5 else "black" if count else "0.65"
        ax.text(col, row, str(count), ha="center", va="center", fontsize="small", color=colour)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.figure.colorbar(image, ax=ax, label="share of the true class's examples")


def grid_indices(labels: np.ndarray, predicted: np.ndarray, count: int = 36) -> list[int]:
    """Which examples a grid of `count` shows: the mistakes first (up to half), then correct ones, in order."""
    wrong = np.flatnonzero(labels != predicted).tolist()[: count // 2]
    right = np.flatnonzero(labels == predicted).tolist()[: count - len(wrong)]
    return wrong + right


def plot_image(
    ax: Axes, image: np.ndarray, true_name: str, predicted_name: str, probability: float, caption: str = ""
) -> None:
    """One image, titled with its true and predicted class, captioned (its file name); a mistake in red."""
    correct = true_name == predicted_name
    colour = "tab:green" if correct else "tab:red"
    ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(1.5 if correct else 3.5)
    title = f"true: {true_name}\npred: {predicted_name} ({probability:.0%})"
    ax.set_title(title, fontsize="small", color="black" if correct else "tab:red")
    if caption:
        ax.set_xlabel(_shortened(caption, 22), fontsize="x-small", labelpad=2)


def _shortened(text: str, width: int) -> str:
    """`text` cut in the middle to at most `width` characters (the end of a file name says most)."""
    return text if len(text) <= width else text[: width // 2 - 1] + "…" + text[-(width - width // 2) :]


def write_image_grid(
    path: Path,
    run: str,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    summary: str = "",
    columns: int = 6,
    captions: Sequence[str] | None = None,
) -> None:
    """A grid of validation images with true and predicted class (mistakes in red), each captioned
    (its file name); `summary` follows the run."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.75 * columns, 2.45 * rows + 0.9), layout="constrained")
    axes = np.atleast_1d(axes).ravel()
    predicted = np.argmax(probabilities, axis=-1)
    captions = captions or [""] * len(images)
    for ax, image, label, pred, probs, caption in zip(
        axes, images, labels, predicted, probabilities, captions, strict=False
    ):
        plot_image(ax, image, class_names[int(label)], class_names[int(pred)], float(probs[pred]), caption)
    for ax in axes[len(images) :]:
        ax.axis("off")
    mistakes = int(np.sum(np.asarray(labels) != predicted))
    shown = f"{len(images)} shown, {mistakes} of them misclassified (red frame)"
    fig.suptitle(_title(f"Validation images of {run}", 95) + f"{summary}\n{shown}", fontsize="medium")
    fig.legend(
        handles=[
            Patch(facecolor="none", edgecolor="tab:green", linewidth=1.5, label="correct"),
            Patch(facecolor="none", edgecolor="tab:red", linewidth=3.5, label="mistake"),
        ],
        loc="outside lower center",
        ncols=2,
        fontsize="small",
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_confusion(path: Path, run: str, report: dict[str, Any], class_names: Sequence[str]) -> None:
    """The confusion matrix of one split's classification report (metrics.classification_report)."""
    size = max(5.0, 3.0 + 0.45 * len(class_names))
    fig, ax = plt.subplots(figsize=(size + 1.2, size), layout="constrained")
    plot_confusion(ax, np.asarray(report["confusion_matrix"]), class_names)
    ax.set_title(
        _title(f"Confusion matrix of {run}", int(11 * size))
        + f"\nvalidation set: accuracy {report['accuracy']:.1%} of {report['num_examples']} examples",
        fontsize="medium",
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_predictions(
    path: Path,
    run: str,
    splits: dict[str, dict[str, np.ndarray]],
    reference: dict[str, Any] | None = None,
    names: tuple[str, str] = ("x", "y"),
) -> None:
    """One panel per split (training, validation) of `plot_regression`."""
    fig, axes = plt.subplots(1, len(splits), figsize=(6.5 * len(splits), 4.5), sharey=True, layout="constrained")
    for ax, (split, data) in zip(np.atleast_1d(axes), splits.items(), strict=True):
        plot_regression(ax, data["inputs"], data["labels"], data["predictions"], f"{split} set", reference, names)
    fig.suptitle(_title(f"Predictions of {run}", 150))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_predicted_vs_true(path: Path, run: str, data: dict[str, np.ndarray], label: str = "y") -> None:
    """The validation set: predicted against true, and the residuals."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    plot_predicted_vs_true(left, data["labels"], data["predictions"], "validation set", label)
    plot_residuals(right, data["labels"], data["predictions"], "validation set", label)
    fig.suptitle(_title(f"Predicted against true values, {run}", 130))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_curves(
    path: Path,
    run: str,
    history: Sequence[dict[str, Any]],
    *,
    metrics: Sequence[str],
    loss_name: str,
    augmented: bool = False,
) -> None:
    """The training curves of one model_dir: the loss, and a panel beside it for each of `metrics` (the
    problem's curve metric, Shown.curve_metric, and those the user chose; `loss_name`: the loss in words);
    `augmented`: the training batches were augmented (their metrics are measured on those)."""
    if not metrics:
        fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
        plot_curves(ax, history)
        ax.set_title(_title(f"Training curves of {run}", 80))
    else:
        columns = min(len(metrics) + 1, 3)
        rows = -(-(len(metrics) + 1) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.5 * rows), layout="constrained", squeeze=False)
        loss_ax, *metric_axes = axes.ravel()
        plot_curves(loss_ax, history)
        loss_ax.set_title(f"loss ({loss_name})")
        for metric, metric_ax in zip(metrics, metric_axes, strict=False):
            plot_curves(metric_ax, history, metric, log=False)
            metric_ax.set_title(f"{metric} (train: on augmented batches)" if augmented else metric)
        for unused in metric_axes[len(metrics) :]:
            unused.set_visible(False)
        fig.suptitle(_title(f"Training curves of {run}", 130))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the figures of a run, by name ----------------------------------------------------------


class PlottedModel:
    """What the figures of one trained model draw from: the model is loaded once, each split predicted once."""

    def __init__(self, model_dir: Path, shards_dir: Path, metrics_dir: Path, title: str) -> None:
        self.model_dir, self.shards_dir, self.metrics_dir, self.title = model_dir, shards_dir, metrics_dir, title
        self.manifest = read_manifest(shards_dir)
        self.shown = SHOWN_BY[self.manifest["problem"]]
        # Images among named inputs are decoded in the model: no grid of them (that reads an image folder's shards).
        named_images = named_inputs(self.manifest) and not inputs.is_image(self.manifest) and len(
            inputs.input_shape(self.manifest)) == 3  # fmt: skip
        self.figures = self.shown.figures(() if named_images else inputs.input_shape(self.manifest))
        # Inputs are kept only for the figure that draws them (a split of images would not fit in memory).
        self.keep_inputs = "predictions" in self.figures
        self.model = cache(lambda: evaluate.load_model(model_dir))
        self.predict = cache(self._predict)

    def _predict(self, split: str) -> dict[str, np.ndarray]:
        """Labels, predictions and ids of a split (and its inputs if a figure draws them)."""
        return evaluate.predict(
            self.model_dir, self.shards_dir, split, keep_inputs=self.keep_inputs, model=self.model()
        )

    def metrics(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.metrics_dir / layout.METRICS).read_text())
        return result

    def history(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads((self.model_dir / layout.HISTORY).read_text())
        return result

    def trained(self) -> dict[str, Any]:
        """The configuration the model trained with (train_config.json's)."""
        result: dict[str, Any] = json.loads((self.model_dir / layout.TRAIN_CONFIG).read_text())["config"]
        return result

    def augmented(self) -> bool:
        """Whether the training batches were augmented."""
        return bool(self.trained().get("augment"))

    def curve_metrics(self) -> list[str]:
        """The metrics the training curves draw beside the loss: the problem's, then those chosen."""
        own = [self.shown.curve_metric] if self.shown.curve_metric else []
        return [*own, *[name for name in self.metrics().get("chosen_metrics", []) if name not in own]]

    def loss_name(self) -> str:
        """The loss in words: the problem's, or the one chosen (or compiled by the network)."""
        loss = self.trained().get("loss")
        if loss in (None, problems.get(self.manifest["problem"]).default_loss):
            return self.shown.loss_name
        return loss if isinstance(loss, str) else str(loss.get("class_name", loss))

    def label_name(self) -> str:
        return str(self.manifest.get("label_column", self.manifest["label"]))


def _predictions(run: PlottedModel, path: Path) -> None:
    splits = {split: run.predict(split) for split in ("train", "validation")}
    names = (run.manifest.get("feature_names", [run.manifest["inputs"]])[0], run.label_name())
    write_predictions(path, run.title, splits, run.manifest.get("reference_curve"), names)


def _predicted_vs_true(run: PlottedModel, path: Path) -> None:
    write_predicted_vs_true(path, run.title, run.predict("validation"), run.label_name())


def _confusion_matrix(run: PlottedModel, path: Path) -> None:
    metrics = run.metrics()
    write_confusion(path, run.title, metrics["validation"], metrics["class_names"])


def _validation_images(run: PlottedModel, path: Path) -> None:
    p = run.predict("validation")
    predicted = p["predictions"].argmax(axis=-1)
    indices = grid_indices(p["labels"], predicted)
    images = inputs.take_images(run.shards_dir, run.manifest, "validation", indices)
    write_image_grid(
        path,
        run.title,
        [images[i] for i in indices],
        p["labels"][indices],
        p["predictions"][indices],
        run.manifest["class_names"],
        summary=f": {int((predicted != p['labels']).sum())} of {len(predicted)} misclassified, shown first",
        captions=[Path(p["ids"][i]).name for i in indices] if "ids" in p else None,
    )


def _curves(run: PlottedModel, path: Path) -> None:
    write_curves(
        path,
        run.title,
        run.history(),
        metrics=run.curve_metrics(),
        loss_name=run.loss_name(),
        augmented=run.augmented(),
    )


# Figure name -> (file name, what draws it). SHOWN_BY names the figures of each problem.
FIGURES: dict[str, tuple[str, Callable[[PlottedModel, Path], None]]] = {
    "predictions": (PREDICTIONS_PNG, _predictions),
    "predicted_vs_true": (PREDICTED_VS_TRUE_PNG, _predicted_vs_true),
    "confusion_matrix": (CONFUSION_PNG, _confusion_matrix),
    "validation_images": (IMAGES_PNG, _validation_images),
    "curves": (CURVES_PNG, _curves),
}


@dataclass(frozen=True)
class Shown:
    """How a problem is shown: its figures (by the shape of the inputs) and its training curves' panels."""

    figures: Callable[[Sequence[int]], tuple[str, ...]]
    loss_name: str  # what the loss is, in words (the training curves' loss panel)
    curve_metric: str | None = None  # a metric drawn beside the loss in the training curves, if any


def _regression_figures(input_shape: Sequence[int]) -> tuple[str, ...]:
    # One input feature: the predictions against it (the seed's figure) as well.
    along_input = ("predictions",) if tuple(input_shape) == (1,) else ()
    return (*along_input, "predicted_vs_true", "curves")


def _classification_figures(input_shape: Sequence[int]) -> tuple[str, ...]:
    images = ("validation_images",) if problems.input_kind(input_shape) == "image" else ()
    return ("confusion_matrix", *images, "curves")


# problems.Problem.name -> how PlotInference shows it.
SHOWN_BY: dict[str, Shown] = {
    "regression": Shown(_regression_figures, loss_name="mean squared error"),
    "classification": Shown(_classification_figures, loss_name="cross-entropy", curve_metric="accuracy"),
}


def write_figures(
    folder: Path,
    model_dir: Path,
    shards_dir: Path,
    metrics_dir: Path,
    title: str,
    progress: Callable[[float, str], None] | None = None,
) -> list[str]:
    """Draw every figure the shards' problem names into `folder`; return their file names."""
    run = PlottedModel(model_dir, shards_dir, metrics_dir, title)
    names = run.figures
    written = []
    for i, name in enumerate(names):
        file_name, draw = FIGURES[name]
        if progress:
            progress(i / len(names), f"plotting {name.replace('_', ' ')}")
        draw(run, folder / file_name)
        written.append(file_name)
    return written
