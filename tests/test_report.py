"""The HTML report of runs (experiments/report.py, `python -m pipeline report`), opened in headless Chromium."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image

from pipeline.core import markers
from pipeline.experiments import report, runs
from tests.browser import Chromium
from tests.conftest import PROJECT_DIR, SineRuns, run_cli


class _Page(HTMLParser):
    """The rows of the runs table and the images of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[dict[str, str]] = []
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self._cell = []
        elif tag == "img":
            self.images.append({k: v or "" for k, v in attrs})

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _plots(root: Path, model: Path) -> list[Path]:
    """The PNGs of the plots folder that read `model`, sorted."""
    model_marker = markers.read_marker(model)
    assert model_marker is not None
    (folder,) = [
        f
        for f in (root / "reports").glob("*-plots-*")
        if model_marker["identity"] in (markers.read_marker(f) or {}).get("upstream", {}).values()
    ]
    return sorted(folder.glob("*.png"))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def test_report_renders_offline_with_every_figure(sine_runs: SineRuns, tmp_path: Path) -> None:
    found = runs.collect(sine_runs.root)
    out = report.write_report(found, tmp_path / "report.html")
    assert out == tmp_path / "report.html" and not list(tmp_path.glob(".*tmp*"))  # written in one piece

    page = _parse(out)
    assert [row[0] for row in page.rows] == [run.name for run in found]
    # The curves, the metrics against the parameters, and each run's two figures, byte for byte.
    assert [image["alt"] for image in page.images[:2]] == [
        "Training curves of every run",
        "Each metric against each parameter that differs",
    ]
    figures = [path for model in sine_runs.models.values() for path in _plots(sine_runs.root, model)]
    assert len(figures) >= 6  # predictions and training curves of each run, at least
    embedded = [base64.b64decode(image["src"].removeprefix("data:image/png;base64,")) for image in page.images[2:]]
    assert embedded == [path.read_bytes() for path in figures]

    with Chromium() as browser:
        session, visit = browser.open(out)
        assert visit.errors() == []
        assert [url for url in visit.requests if not url.startswith("data:")] == [out.resolve().as_uri()]
        assert visit.failed == []
        # Every image decoded to its full size (a broken data: URL decodes to 0 x 0).
        sizes = browser.evaluate(
            session, "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(sizes) == 2 + len(figures) and all(done for done, _, _ in sizes)
        assert all(width >= 300 and height >= 200 for _, width, height in sizes), sizes
        # The curves: loss, mae and rmse (the mse repeats the loss), two panels a row; the metrics:
        # three (mae, mse, rmse) against three parameters (both seeds, the learning rate), 100 dpi.
        assert sizes[0][1:] == [1300, round(100 * (3.8 * 2 + 0.4))]
        assert sizes[1][1:] == [round(100 * (3.6 * 3 + 0.6)), round(100 * (2.9 * 3 + 0.8))]
        shown = browser.evaluate(session, "Array.from(document.querySelectorAll('#runs tbody tr')).length")
        assert shown == 3
        screenshot = tmp_path / "report.png"
        browser.screenshot(session, screenshot)
    pixels = matplotlib.image.imread(io.BytesIO(screenshot.read_bytes()))
    assert pixels.shape[:2] == (2000, 1400)
    assert pixels[..., :3].std() > 0.1  # not a blank page
    (PROJECT_DIR / "reports").mkdir(exist_ok=True)
    (PROJECT_DIR / "reports" / "runs-report.png").write_bytes(screenshot.read_bytes())  # for a person to look at


def test_curves_leave_out_a_metric_that_repeats_the_loss() -> None:
    def sine(train_mse: float) -> list[dict[str, Any]]:
        return [
            {"step": 1, "train": {"loss": 0.5, "mse": 0.5 * (1 + 1e-9), "mae": 0.7}, "eval": {"loss": 0.4, "mse": 0.4}},
            {"step": 2, "train": {"loss": 0.2, "mse": train_mse, "mae": 0.6}, "eval": {"loss": 0.3, "mse": 0.3}},
        ]

    images = [{"step": 1, "train": {"loss": 1.0, "accuracy": 0.5}, "eval": {"loss": 1.2, "accuracy": 0.4}}]
    assert report._curve_metrics([sine(0.2), images]) == ["loss", "accuracy", "mae"]
    assert report._curve_metrics([sine(0.25), images]) == ["loss", "accuracy", "mae", "mse"]  # not the loss


def test_report_command_for_chosen_runs(sine_runs: SineRuns, tmp_path: Path) -> None:
    chosen = [sine_runs.models["slower"].name, sine_runs.models["base"].name[-12:]]  # a folder name, an identity
    out = run_cli(["python", "-m", "pipeline", "report", *chosen, "--out", str(tmp_path / "two.html")], sine_runs.root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str((tmp_path / "two.html").resolve())
    page = _parse(tmp_path / "two.html")
    assert [row[0] for row in page.rows] == [sine_runs.models["slower"].name, sine_runs.models["base"].name]
    plots = [_plots(sine_runs.root, sine_runs.models[name]) for name in ("slower", "base")]
    assert len(page.images) == 2 + len(plots[0]) + len(plots[1])

    out = run_cli(["python", "-m", "pipeline", "report", "nothing-like-this"], sine_runs.root)
    assert out.returncode == 40
    assert out.stderr.startswith("ERROR: ParameterError: RUN names no trained model: ")
    assert len(out.stderr.splitlines()) == 1
    assert out.stderr.strip().endswith("Received: 'nothing-like-this'")
    assert not (sine_runs.root / "reports" / "runs.html").exists()
