"""Runs side by side on one HTML page: `python -m pipeline report`.

The page is self-contained: its figures are PNGs embedded as data: URLs, its
style is inline, it has no script, and its Content-Security-Policy forbids
loading anything else, so it opens the same from a laptop, a mail attachment
or a cluster's shared disk, offline. It holds the runs table
(`runs.format_table`'s columns), the training curves of every run overlaid
(train dashed, eval solid; one panel per metric of the curves), each metric
that differs against each parameter that differs (the swept ones), and each
run's own figures (the PNGs of its plots folder). Matplotlib, Agg backend, no
TensorFlow.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline import runs as runs_module
from pipeline.runs import Column, Run

MAX_CURVE_PANELS = 4
MAX_LEGEND_RUNS = 12
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font: 12px/1.3 ui-monospace, monospace; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; white-space: nowrap; }
td.number { text-align: right; }
th { background: #f0f0f0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 12px; color: #555; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: -0.1em; }
"""


def _png(figure: Figure) -> str:
    """A figure as a data: URL (and closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _file_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _colours(count: int) -> list[Any]:
    cmap = plt.get_cmap("tab10" if count <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(count)]


def _label(run: Run, params: Sequence[Column]) -> str:
    """The run's short identity and the values of the parameters that differ."""
    values = ", ".join(f"{c.header}={runs_module.format_value(c, c.value(run))}" for c in params)
    return f"{run.identity[:8]}" + (f" ({values})" if values else "")


def _histories(runs: Sequence[Run]) -> list[list[dict[str, Any]]]:
    histories = []
    for run in runs:
        try:
            histories.append(json.loads(run.history_path().read_text()))
        except (OSError, ValueError):  # a model_dir without curves: drawn as nothing
            histories.append([])
    return histories


def _curve_metrics(histories: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    """The metrics of the curves, loss first; one repeating the loss in every run (mse of an MSE loss) is left out."""
    names = sorted({name for history in histories for h in history for split in ("train", "eval") for name in h[split]})
    names.sort(key=lambda name: name != "loss")

    def series(history: Sequence[dict[str, Any]], name: str) -> list[Any]:
        return [h["eval"].get(name) for h in history] + [h["train"].get(name) for h in history]

    if "loss" in names:
        names = [n for n in names if n == "loss" or any(series(h, n) != series(h, "loss") for h in histories if h)]
    return names[:MAX_CURVE_PANELS]


def curves_figure(runs: Sequence[Run], params: Sequence[Column], colours: Sequence[Any]) -> str | None:
    """Every run's training curves overlaid: one panel per metric, train dashed and eval solid."""
    histories = _histories(runs)
    names = _curve_metrics(histories)
    if not names:
        return None
    columns = min(2, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 3.8 * rows + 0.4), layout="constrained")
    axes_list = list(getattr(axes, "flat", [axes]))
    for ax, name in zip(axes_list, names, strict=False):
        positive = True
        for history, colour in zip(histories, colours, strict=True):
            steps = [h["step"] for h in history]
            for split, style in (("train", "--"), ("eval", "-")):
                values = [h[split].get(name, math.nan) for h in history]
                positive &= all(v > 0 for v in values if not math.isnan(v))
                ax.plot(steps, values, style, color=colour, lw=1.4, marker="o" if split == "eval" else None, ms=3)
        if name == "loss" and positive:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("global step")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes_list[len(names) :]:
        ax.axis("off")
    handles = [Line2D([], [], color=c, lw=2, label=_label(run, params)) for run, c in zip(runs, colours, strict=True)]
    if len(runs) > MAX_LEGEND_RUNS:  # a legend taller than the plots: the table's swatches name the colours
        handles = []
    handles += [Line2D([], [], color="0.3", ls="--", label="train"), Line2D([], [], color="0.3", label="eval")]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize="small")
    figure.suptitle(f"Training curves of {len(runs)} runs (train dashed, eval solid)")
    return _png(figure)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def metrics_figure(
    runs: Sequence[Run], params: Sequence[Column], metrics: Sequence[Column], colours: Sequence[Any]
) -> str | None:
    """Each metric that differs between the runs (rows) against each parameter that differs (columns)."""
    metrics = [m for m in metrics if len({m.value(run) for run in runs}) > 1]
    if not params or not metrics:
        return None
    figure, axes = plt.subplots(
        len(metrics),
        len(params),
        figsize=(3.6 * len(params) + 0.6, 2.9 * len(metrics) + 0.6),
        layout="constrained",
        squeeze=False,
    )
    for column, param in enumerate(params):
        values = [param.value(run) for run in runs]
        if _numeric([v for v in values if v is not None]):
            xs: list[Any] = values
            ticks = None
        else:  # lists, strings, booleans: one position per distinct value
            labels = sorted({runs_module.format_value(param, v) for v in values})
            xs = [labels.index(runs_module.format_value(param, v)) for v in values]
            ticks = labels
        for row, metric in enumerate(metrics):
            ax = axes[row][column]
            for x, run, colour in zip(xs, runs, colours, strict=True):
                y = metric.value(run)
                if x is not None and y is not None:
                    ax.scatter([x], [y], color=colour, s=36, edgecolor="black", linewidth=0.5, zorder=3)
            positive = [x for x in xs if isinstance(x, (int, float)) and x > 0]
            if ticks is None and len(positive) == len(xs) and max(positive) / min(positive) >= 20:
                ax.set_xscale("log")
            if ticks is not None:
                ax.set_xticks(range(len(ticks)), labels=ticks, rotation=20, ha="right", fontsize="small")
                ax.set_xlim(-0.5, len(ticks) - 0.5)
            ax.set_xlabel(param.header)
            ax.set_ylabel(metric.key)
            ax.grid(True, alpha=0.3)
    figure.suptitle("Metrics against the parameters that differ (one point per run, colours as in the curves)")
    return _png(figure)


def _cell(column: Column, run: Run, colour: Any | None) -> str:
    text = html.escape(runs_module.format_value(column, column.value(run)))
    if column.kind == "run" and colour is not None:
        rgb = "#" + "".join(f"{round(255 * c):02x}" for c in colour[:3])
        text = f'<span class="swatch" style="background:{rgb}"></span>{text}'
    number = ' class="number"' if column.kind in ("metric", "seconds") else ""
    return f"<td{number}>{text}</td>"


def render(runs: Sequence[Run], swept: Sequence[str] | None = None) -> str:
    """The report page as HTML text (see the module docstring)."""
    columns, ordered = runs_module.table(runs, swept=swept)
    params = [c for c in columns if c.kind == "param"]
    metrics = [c for c in columns if c.kind == "metric"]
    colours = _colours(len(ordered))
    by_run = {run.identity: colour for run, colour in zip(ordered, colours, strict=True)}
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">',
        f"<title>{len(ordered)} runs</title><style>{STYLE}</style></head><body>",
        f"<h1>{len(ordered)} runs</h1>",
        f"<p>Written {html.escape(time.strftime('%Y-%m-%d %H:%M'))} by <code>python -m pipeline report</code>.</p>",
        "<h2>Runs</h2>",
        '<table id="runs"><thead><tr>' + "".join(f"<th>{html.escape(c.header)}</th>" for c in columns) + "</tr>",
        "</thead><tbody>",
    ]
    for run in ordered:
        parts.append("<tr>" + "".join(_cell(c, run, by_run[run.identity]) for c in columns) + "</tr>")
    parts.append("</tbody></table>")
    parts.append("<h2>Training curves</h2>")
    curves = curves_figure(ordered, params, colours)
    parts.append(
        f'<img class="figure" alt="Training curves of every run" src="{curves}">'
        if curves
        else "<p>No training curves (no history.json in the model folders).</p>"
    )
    parts.append("<h2>Metrics against parameters</h2>")
    against = metrics_figure(ordered, params, metrics, colours)
    parts.append(
        f'<img class="figure" alt="Each metric against each parameter that differs" src="{against}">'
        if against
        else "<p>Nothing to plot: no parameter, or no metric, differs between these runs.</p>"
    )
    parts.append("<h2>Each run's figures</h2>")
    for run in ordered:
        values = ", ".join(f"{c.header} = {runs_module.format_value(c, c.value(run))}" for c in params)
        parts.append(f'<section id="{html.escape(run.name)}"><h3>{html.escape(run.name)}</h3>')
        parts.append(f"<p>{html.escape(values or 'the only configuration')}; model folder <code>")
        parts.append(f"{html.escape(str(run.model.folder))}</code></p>")
        figures = run.figures()
        if not figures:
            parts.append("<p>No figures yet (run PlotInference).</p>")
        for path in figures:
            parts.append(
                f'<figure><img class="figure" alt="{html.escape(path.name)} of {html.escape(run.name)}" '
                f'src="{_file_png(path)}"><figcaption>{html.escape(path.name)}</figcaption></figure>'
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(runs: Sequence[Run], out: Path, swept: Sequence[str] | None = None) -> Path:
    """Write the report page of `runs` to `out` (atomically: a half-written page is never left there); return `out`."""
    if not runs:
        raise ValueError(f"No runs to report. Received: runs=[] for out={out}")
    page = render(runs, swept)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
