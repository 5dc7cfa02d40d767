"""Runs side by side on one HTML page: `python -m pipeline report`.

The page is self-contained: its figures are PNGs embedded as data: URLs, its
style is inline, it has no script, and its Content-Security-Policy forbids
loading anything else, so it opens the same from a laptop, a mail attachment
or a cluster's shared disk, offline. It holds the runs table
(`runs.format_table`'s columns), the training curves of every run overlaid
(train dashed, eval solid; one panel per metric of the curves), each metric
that differs against each parameter that differs (the swept ones), and each
run's own figures (the PNGs of its plots folder), once per data set and
problem (experiments/selection.py): MSE and cross-entropy never share an
axis. Matplotlib, Agg backend, no TensorFlow.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.experiments import runs as runs_module
from pipeline.experiments import selection
from pipeline.experiments.runs import Column, Run

MAX_CURVE_PANELS = 4
MAX_LEGEND_RUNS = 12
TICK_WIDTH = 24  # characters per line of a categorical parameter's value under its axis
MAX_LABEL_PARAMS = 3  # more make a legend wider than the figure: the table has them
MAX_PARAMS_PER_METRIC = 8
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font: 12px/1.3 ui-monospace, monospace; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; white-space: nowrap; }
td.number { text-align: right; }
th { background: #f0f0f0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 12px; color: #555; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: -0.1em; }
"""


def png(figure: Figure) -> str:
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
    """The run's folder name, and the values of the parameters that differ when they are few."""
    values = ", ".join(f"{c.header}={runs_module.format_value(c, c.value(run))}" for c in params)
    return f"{run.name} ({values})" if values and len(params) <= MAX_LABEL_PARAMS else run.name


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

    def close(a: Any, b: Any) -> bool:  # the loss and its metric are summed in other orders
        return a is b is None or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6))

    def repeats_loss(name: str) -> bool:  # in every run that has it
        having = [history for history in histories if any(v is not None for v in series(history, name))]
        pairs = [zip(series(history, name), series(history, "loss"), strict=True) for history in having]
        return all(close(a, b) for pair in pairs for a, b in pair)

    return [name for name in names if name == "loss" or not repeats_loss(name)][:MAX_CURVE_PANELS]


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
    return png(figure)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _pairs(runs: Sequence[Run], params: Sequence[Column], metrics: Sequence[Column]) -> list[list[Column]]:
    """Per metric, the parameters to plot it against: those that differ among the runs that have it.

    In a root of sine and image runs, the MSE is plotted against what differs between
    the sine runs, not against the image folder. The metric itself must differ too.
    """
    rows = []
    for metric in metrics:
        having = [run for run in runs if metric.value(run) is not None]
        if len({metric.value(run) for run in having}) < 2:
            continue
        against = [p for p in params if len({runs_module.format_value(p, p.value(run)) for run in having}) > 1]
        rows.append([metric, *against[:MAX_PARAMS_PER_METRIC]])
    return [row for row in rows if len(row) > 1]


def metrics_figure(
    runs: Sequence[Run], params: Sequence[Column], metrics: Sequence[Column], colours: Sequence[Any]
) -> str | None:
    """Each metric that differs between the runs (a row) against each parameter that differs (a panel)."""
    rows = _pairs(runs, params, metrics)
    if not rows:
        return None
    width = max(len(row) - 1 for row in rows)
    # At least wide enough for the title, whatever the number of panels.
    figure, axes = plt.subplots(
        len(rows),
        width,
        figsize=(max(3.6 * width + 0.6, 6.5), 2.9 * len(rows) + 0.8),
        layout="constrained",
        squeeze=False,
    )
    for row, (metric, *against) in enumerate(rows):
        having = [(run, colour) for run, colour in zip(runs, colours, strict=True) if metric.value(run) is not None]
        for column, param in enumerate(against):
            ax = axes[row][column]
            values = [param.value(run) for run, _ in having]
            if _numeric([v for v in values if v is not None]):
                xs: list[Any] = values
                ticks = None
            else:  # lists, strings, booleans: one position per distinct value
                ticks = sorted({runs_module.format_value(param, v) for v in values})
                xs = [ticks.index(runs_module.format_value(param, v)) for v in values]
            for x, (run, colour) in zip(xs, having, strict=True):
                if x is not None:
                    ax.scatter([x], [metric.value(run)], color=colour, s=36, edgecolor="black", linewidth=0.5, zorder=3)
            positive = [x for x in xs if isinstance(x, (int, float)) and x > 0]
            if ticks is None and len(positive) == len(xs) and max(positive) / min(positive) >= 20:
                ax.set_xscale("log")
            if ticks is not None:
                # Long values (lists of augmentations, file names) wrapped under their position, not cut off.
                labels = [textwrap.fill(tick, TICK_WIDTH) for tick in ticks]
                ax.set_xticks(range(len(ticks)), labels=labels, fontsize="small")
                ax.set_xlim(-0.5, len(ticks) - 0.5)
            ax.set_xlabel(param.header)
            ax.set_ylabel(metric.key)
            ax.grid(True, alpha=0.3)
        for column in range(len(against), width):
            axes[row][column].axis("off")
    figure.suptitle("Metrics against the parameters that differ\n(one point per run, colours as in the table)")
    return png(figure)


def _cell(column: Column, run: Run, colour: Any | None) -> str:
    text = html.escape(runs_module.format_value(column, column.value(run)))
    if column.kind == "run" and colour is not None:
        rgb = "#" + "".join(f"{round(255 * c):02x}" for c in colour[:3])
        text = f'<span class="swatch" style="background:{rgb}"></span>{text}'
    number = ' class="number"' if column.kind in ("metric", "seconds") else ""
    return f"<td{number}>{text}</td>"


def render(
    runs: Sequence[Run],
    swept: Sequence[str] | None = None,
    title: str = "",
    sections: Sequence[tuple[str, str]] = (),
) -> str:
    """The report page as HTML text (see the module docstring): one section per data set and problem.
    `title` heads it (default: "N runs") and `sections`, (heading, HTML) pairs, come before the runs
    (a search's trials and figures)."""
    groups = selection.groups(runs)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">',
        f"<title>{html.escape(title or f'{len(runs)} runs')}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title or f'{len(runs)} runs')}</h1>",
        f"<p>Written {html.escape(time.strftime('%Y-%m-%d %H:%M'))} by <code>python -m pipeline report</code>.</p>",
        *(f"<h2>{html.escape(heading)}</h2>\n{body}" for heading, body in sections),
    ]
    if len(groups) > 1:
        parts.append(
            "<p>By data set and problem: "
            + ", ".join(
                f'<a href="#set-{number}">{html.escape(name)}</a> ({len(members)})'
                for number, (name, members) in enumerate(groups, 1)
            )
            + ".</p>"
        )
    for number, (name, members) in enumerate(groups, 1):
        parts.append(
            f'<h2 id="set-{number}">{html.escape(name)}: {len(members)} run{"s" if len(members) > 1 else ""}</h2>'
        )
        parts += _section(members, swept, "runs" if number == 1 else f"runs-{number}")
    parts.append("</body></html>")
    return "\n".join(parts)


def _section(runs: Sequence[Run], swept: Sequence[str] | None, table_id: str) -> list[str]:
    """The table, the curves, the metrics against the parameters and each run's figures of runs of one data set."""
    columns, ordered = runs_module.table(runs, swept=swept)
    params = [c for c in columns if c.kind == "param"]
    metrics = [c for c in columns if c.kind == "metric"]
    colours = _colours(len(ordered))
    by_run = {run.identity: colour for run, colour in zip(ordered, colours, strict=True)}
    parts = [
        "<h3>Runs</h3>",
        f'<div class="scroll"><table id="{table_id}"><thead><tr>'
        + "".join(f"<th>{html.escape(c.header)}</th>" for c in columns)
        + "</tr>",
        "</thead><tbody>",
    ]
    for run in ordered:
        parts.append("<tr>" + "".join(_cell(c, run, by_run[run.identity]) for c in columns) + "</tr>")
    parts.append("</tbody></table></div>")
    parts.append("<h3>Training curves</h3>")
    curves = curves_figure(ordered, params, colours)
    parts.append(
        f'<img class="figure" alt="Training curves of every run" src="{curves}">'
        if curves
        else "<p>No training curves (no history.json in the model folders).</p>"
    )
    parts.append("<h3>Metrics against parameters</h3>")
    against = metrics_figure(ordered, params, metrics, colours)
    parts.append(
        f'<img class="figure" alt="Each metric against each parameter that differs" src="{against}">'
        if against
        else "<p>Nothing to plot: no parameter, or no metric, differs between these runs.</p>"
    )
    parts.append("<h3>Each run's figures</h3>")
    for run in ordered:
        values = ", ".join(f"{c.header} = {runs_module.format_value(c, c.value(run))}" for c in params)
        named = " ".join(f"{key}: {text}" for key, text in run.label.items())
        parts.append(f'<section id="{html.escape(run.name)}"><h4>{html.escape(run.name)}</h4>')
        if named:
            parts.append(f"<p>{html.escape(named)}</p>")
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
    return parts


def write_report(
    runs: Sequence[Run],
    out: Path,
    swept: Sequence[str] | None = None,
    title: str = "",
    sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write the report page of `runs` to `out` (atomically: a half-written page is never left there); return `out`."""
    page = render(runs, swept, title, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
