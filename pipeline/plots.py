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


def plot_curves(ax: Axes, history: Sequence[dict[str, Any]], metric: str = "loss") -> None:
    """Train and eval `metric` against the global step (log scale)."""
    steps = [h["step"] for h in history]
    for split, style in (("train", "-o"), ("eval", "-s")):
        values = [h[split].get(metric, np.nan) for h in history]
        ax.plot(steps, values, style, ms=3, label=f"{split} {metric}")
    ax.set_yscale("log")
    ax.set_xlabel("global step")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()


def write_predictions(path: Path, run: str, splits: dict[str, dict[str, np.ndarray]]) -> None:
    """One panel per split (training, validation) of `plot_regression`."""
    fig, axes = plt.subplots(1, len(splits), figsize=(6.5 * len(splits), 4.5), sharey=True, layout="constrained")
    for ax, (split, data) in zip(np.atleast_1d(axes), splits.items(), strict=True):
        plot_regression(ax, data["inputs"], data["labels"], data["predictions"], f"{split} set")
    fig.suptitle(f"Predictions of {run}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_curves(path: Path, run: str, history: Sequence[dict[str, Any]]) -> None:
    """The training curves of one model_dir."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    plot_curves(ax, history)
    ax.set_title(f"Training curves of {run}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
