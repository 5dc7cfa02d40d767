"""A search's results: the table of its trials, and its HTML report (Matplotlib, Agg backend).

The table has one row per trial: its number, its state (complete: trained now;
reused: its configuration was trained before; pruned, with the step it stopped at;
failed; interrupted), the objective (a pruned trial's last reported value, in
parentheses), the values it took and its model folder. The report is the runs report
(pipeline/experiments/report.py) of the trials' models, with three sections first:
the trials' table, the optimisation history (the objective of each trial against its
number, the best so far as a line) and the parameter importances (Optuna's PED-ANOVA,
from the finished trials).
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from pipeline import paths
from pipeline.experiments import report, runs
from pipeline.experiments.study import Row

STATES = {"complete": "tab:blue", "reused": "tab:green", "pruned": "tab:orange", "failed": "tab:red"}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def values_of(row: Row, search: Any) -> str:
    """A trial's values, `learning_rate 0.0031, hidden_units [64]`."""
    return ", ".join(f"{d.name} {_cell(row.params.get(d.label))}" for d in search.dimensions)


def _lines(rows: Sequence[Row], search: Any) -> list[list[str]]:
    header = ["trial", "state", search.metric, *(d.name for d in search.dimensions), "run"]
    lines = [header]
    for row in rows:
        value = "-" if row.value is None else _cell(row.value)
        if row.state == "pruned" and row.value is not None:
            value = f"({value})"
        state = f"pruned@{row.step}" if row.state == "pruned" and row.step is not None else row.state
        params = [_cell(row.params[d.label]) if d.label in row.params else "-" for d in search.dimensions]
        lines.append([str(row.number), state, value, *params, row.run or "-"])
    return lines


def table(rows: Sequence[Row], search: Any) -> str:
    """The trials as an aligned text table."""
    lines = _lines(rows, search)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def history_figure(rows: Sequence[Row], search: Any) -> str | None:
    """The objective of every trial against its number, by state, and the best so far."""
    points = [(row, float(row.value)) for row in rows if row.value is not None and math.isfinite(row.value)]
    if not points:
        return None
    figure, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    for state, colour in STATES.items():
        having = [(row.number, value) for row, value in points if row.state == state]
        if having:
            label = "pruned (last reported value)" if state == "pruned" else state
            ax.scatter(
                [n for n, _ in having], [v for _, v in having], color=colour, label=label, zorder=3,
                marker="x" if state == "pruned" else "o",
            )  # fmt: skip
    better = max if search.direction == "maximize" else min
    best: list[tuple[int, float]] = []
    for row, value in points:
        if row.state in ("complete", "reused"):
            best.append((row.number, value if not best else better(best[-1][1], value)))
    if best:
        ax.step([n for n, _ in best], [v for _, v in best], where="post", color="0.3", lw=1.5, label="best so far")
    values = [value for _, value in points]
    if min(values) > 0 and max(values) / min(values) >= 20:
        ax.set_yscale("log")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(search.objective)
    ax.set_title(f"Optimisation history ({search.direction} {search.objective})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return report.png(figure)


def importances_figure(found: Any) -> str | None:
    """Optuna's parameter importances of the study (None with too few finished trials to tell)."""
    import optuna

    try:
        with warnings.catch_warnings():  # "importances will be equal" on a few trials: the figure shows it
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(found)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    if not importances:
        return None
    names = list(importances)[::-1]
    figure, ax = plt.subplots(figsize=(7.5, 0.6 * len(names) + 1.4), layout="constrained")
    ax.barh(names, [importances[name] for name in names], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, normalised to sum to 1)")
    ax.set_title(f"Parameter importances over {len(found.trials)} trials")
    ax.grid(True, axis="x", alpha=0.3)
    return report.png(figure)


def _html_table(rows: Sequence[Row], search: Any) -> str:
    lines = _lines(rows, search)
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in lines[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in line) + "</tr>" for line in lines[1:])
    return f'<div class="scroll"><table id="trials"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def write(outcome: Any, search: Any, out: Path) -> Path:
    """Write the search's report to `out`: its sections, then the runs report of its trials' models."""
    from pipeline.experiments import study

    found = study.load(outcome.name)
    history = history_figure(outcome.rows, search)
    importances = importances_figure(found)
    sections = [
        ("Trials", _html_table(outcome.rows, search)),
        (
            "Optimisation history",
            f'<img class="figure" alt="Optimisation history" src="{history}">'
            if history
            else "<p>No trial has a result yet.</p>",
        ),
        (
            "Parameter importances",
            f'<img class="figure" alt="Parameter importances" src="{importances}">'
            if importances
            else "<p>Too few finished trials to tell which parameter matters.</p>",
        ),
    ]
    by_name = {run.name: run for run in runs.collect(paths.root())}
    chosen = [by_name[name] for name in dict.fromkeys(outcome.runs) if name in by_name]
    swept = [d.flag for d in search.dimensions]
    return report.write_report(chosen, out, swept, title=f"Search {outcome.name}", sections=sections)
