"""Figures (Matplotlib, object-oriented API, Agg backend).

Plot functions draw on an `Axes` they are given; `write_*` functions make a
figure, save it as PNG and close it. Nothing here is ever shown on a screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from pipeline.sources import X_MAX, X_MIN, true_function


def plot_regression(ax: Axes, x: np.ndarray, y: np.ndarray, y_pred: np.ndarray, title: str) -> None:
    """Noisy points, the model's predictions and the noiseless sin(x) + 1."""
    x, y, y_pred = np.ravel(x), np.ravel(y), np.ravel(y_pred)
    order = np.argsort(x)
    grid = np.linspace(X_MIN, X_MAX, 1000)
    ax.scatter(x, y, s=8, alpha=0.45, color="tab:blue", label=f"examples (n={len(x)})")
    ax.plot(grid, true_function(grid), color="black", lw=1.2, ls="--", label="sin(x) + 1 (noiseless)")
    ax.plot(x[order], y_pred[order], color="tab:red", lw=1.8, label="model prediction")
    mse = float(np.mean((y_pred - y) ** 2))
    ax.set_title(f"{title}: MSE {mse:.4f}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="lower left", fontsize="small")


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
    ax.legend()


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


def plot_image(ax: Axes, image: np.ndarray, true_name: str, predicted_name: str, probability: float) -> None:
    """One image, titled with its true and predicted class; a mistake is framed and titled in red."""
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


def write_image_grid(
    path: Path,
    run: str,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    summary: str = "",
    columns: int = 6,
) -> None:
    """A grid of validation images with true and predicted class (mistakes in red); `summary` follows the run."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.75 * columns, 1.95 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(axes).ravel()
    predicted = np.argmax(probabilities, axis=-1)
    for ax, image, label, pred, probs in zip(axes, images, labels, predicted, probabilities, strict=False):
        plot_image(ax, image, class_names[int(label)], class_names[int(pred)], float(probs[pred]))
    for ax in axes[len(images) :]:
        ax.axis("off")
    mistakes = int(np.sum(np.asarray(labels) != predicted))
    shown = f"{len(images)} shown, {mistakes} of them misclassified (red frame)"
    fig.suptitle(f"Validation images of {run}{summary}\n{shown}", fontsize="medium")
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
    size = 3.0 + 0.45 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), layout="constrained")
    plot_confusion(ax, np.asarray(report["confusion_matrix"]), class_names)
    ax.set_title(
        f"Confusion matrix of {run}\nvalidation set: accuracy {report['accuracy']:.1%} "
        f"of {report['num_examples']} images",
        fontsize="medium",
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_predictions(path: Path, run: str, splits: dict[str, dict[str, np.ndarray]]) -> None:
    """One panel per split (training, validation) of `plot_regression`."""
    fig, axes = plt.subplots(1, len(splits), figsize=(6.5 * len(splits), 4.5), sharey=True, layout="constrained")
    for ax, (split, data) in zip(np.atleast_1d(axes), splits.items(), strict=True):
        plot_regression(ax, data["inputs"], data["labels"], data["predictions"], f"{split} set")
    fig.suptitle(f"Predictions of {run}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_curves(path: Path, run: str, history: Sequence[dict[str, Any]]) -> None:
    """The training curves of one model_dir: the loss, and beside it the accuracy if there is one."""
    accuracy = any("accuracy" in h["eval"] for h in history)
    if not accuracy:
        fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
        plot_curves(ax, history)
        ax.set_title(f"Training curves of {run}")
    else:
        fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
        plot_curves(loss_ax, history)
        loss_ax.set_title("loss (cross-entropy)")
        plot_curves(accuracy_ax, history, "accuracy", log=False)
        accuracy_ax.set_title("accuracy (train: on augmented batches)")
        fig.suptitle(f"Training curves of {run}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
