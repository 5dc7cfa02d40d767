"""The pipeline against a real central scheduler (`luigid` on a free loopback port):
failing fast without one, progress in its API, its web UI in Chromium, resources
and concurrency."""

from __future__ import annotations

import collections
import configparser
import http.server
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import luigi
import matplotlib.image
import pytest

from pipeline import layout
from pipeline.cli.scheduler import SchedulerUnavailableError, probe
from pipeline.core import markers
from pipeline.tasks import TrainEstimator
from tests.conftest import PROJECT_DIR, make_root, run_cli
from tests.scheduler import Luigid, free_port, running_luigid, start_luigi, write_run_config

ALL = {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"}
CHROMIUM = "/usr/bin/chromium"
MAX_STEPS = 200


# --- no scheduler: fail at once, with a hint ---


def test_without_a_scheduler_luigi_fails_at_once_naming_both_ways_out(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    make_root(tmp_path)
    started = time.monotonic()
    out = run_cli(["luigi", "--module", "pipeline", "PlotInference", "--scheduler-port", str(port)], cwd=tmp_path)
    elapsed = time.monotonic() - started

    assert out.returncode != 0
    assert elapsed < 5  # the requirement (Luigi alone retries for 90 s)
    assert f"No Luigi scheduler answers at http://127.0.0.1:{port}/ (Connection refused)" in out.stderr
    assert f"`make scheduler SCHEDULER_PORT={port}`" in out.stderr
    assert "--local-scheduler" in out.stderr
    assert "point at the one that runs with --scheduler-host HOST --scheduler-port PORT" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["luigi.cfg"]  # nothing was run


def test_luigi_build_without_a_scheduler_raises_the_same_exit(workspace: Path) -> None:
    with pytest.raises(SchedulerUnavailableError, match="make scheduler SCHEDULER_PORT=") as raised:
        luigi.build([TrainEstimator()], scheduler_host="127.0.0.1", scheduler_port=free_port(), log_level="WARNING")
    assert isinstance(raised.value, SystemExit)
    assert not (workspace / "data").exists()


def test_an_http_server_that_is_not_luigid_is_named_as_such() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert probe(f"http://127.0.0.1:{port}/") == f"HTTP 404 from http://127.0.0.1:{port}/: not a Luigi scheduler"
    finally:
        server.shutdown()
        server.server_close()


# --- one pipeline run against luigid, watched through its API ---


@dataclass
class WatchedRun:
    root: Path  # the artifact root (the working directory of the run)
    scheduler: Luigid
    returncode: int
    log: str
    seen_running: list[tuple[str, float | None, str | None]]  # (task family, %, message), as polled


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WatchedRun]:
    """PlotInference run by `luigi` against a fresh luigid, polling the scheduler while it runs."""
    root = tmp_path_factory.mktemp("watched_run")
    # An evaluation (and a progress report) every 20 of the 200 steps.
    write_run_config(root, {"max_steps": str(MAX_STEPS), "checkpoint_steps": "20", "steps_per_execution": "10"})
    with running_luigid(root / "luigid") as scheduler:
        proc = start_luigi(["PlotInference", *scheduler.cli()], cwd=root, log=root / "luigi.log")
        seen: list[tuple[str, float | None, str | None]] = []
        while proc.poll() is None:
            for task in scheduler.tasks("RUNNING").values():
                record = (task["name"], task["progress_percentage"], task["status_message"])
                if record not in seen:
                    seen.append(record)
            time.sleep(0.02)
        yield WatchedRun(root, scheduler, proc.returncode, (root / "luigi.log").read_text(), seen)


def _only(folder: Path, pattern: str) -> Path:
    (match,) = folder.glob(pattern)
    return match


def test_stages_report_progress_to_the_scheduler(watched_run: WatchedRun) -> None:
    assert watched_run.returncode == 0, watched_run.log[-3000:]
    done = watched_run.scheduler.by_family("DONE")
    assert {family: len(tasks) for family, tasks in done.items()} == dict.fromkeys(ALL, 1)
    final = {family: (tasks[0]["progress_percentage"], tasks[0]["status_message"]) for family, tasks in done.items()}

    # TrainEstimator: step, loss and eval loss of the last evaluation, as history.json has them.
    model_dir = _only(watched_run.root / "models", "sine-mlp-*")
    history = json.loads((model_dir / layout.HISTORY).read_text())
    last = history[-1]
    assert last["step"] == MAX_STEPS
    # (then the speed over the last interval and the time left: none at the end)
    pattern = re.compile(rf"step (\d+)/{MAX_STEPS}: loss (\S+), eval loss (\S+), [\d.]+ steps/s, ETA (\d+:\d\d)")
    assert final["TrainEstimator"][0] == 100
    match = pattern.fullmatch(final["TrainEstimator"][1])
    assert match, final["TrainEstimator"]
    assert match.group(1, 2, 3, 4) == (
        str(MAX_STEPS),
        f"{last['train']['loss']:.4g}",
        f"{last['eval']['loss']:.4g}",
        "0:00",
    )
    # ... and as it trained: every message the scheduler showed matches an evaluation of the run.
    by_step = {h["step"]: h for h in history}
    assert sorted(by_step) == list(range(20, MAX_STEPS + 1, 20))
    shown_steps = []
    for family, percentage, message in watched_run.seen_running:
        if family != "TrainEstimator" or message is None or message == f"step 0/{MAX_STEPS}: training":
            continue
        between = re.fullmatch(rf"step (\d+)/{MAX_STEPS}: loss \S+, [\d.]+ steps/s, ETA (\d+:\d\d|\?)", message)
        if between:  # between two evaluations (at most every estimator.PROGRESS_SECONDS): the step and the ETA
            shown_steps.append(int(between[1]))
            continue
        match = pattern.fullmatch(message)
        assert match, message
        step = int(match[1])
        # Percentage and message are two calls (in that order): a poll between them
        # sees the next evaluation's percentage beside this one's message.
        assert percentage in (round(100 * step / MAX_STEPS, 1), round(100 * (step + 20) / MAX_STEPS, 1))
        assert match[2] == f"{by_step[step]['train']['loss']:.4g}"
        assert match[3] == f"{by_step[step]['eval']['loss']:.4g}"
        shown_steps.append(step)
    assert shown_steps == sorted(shown_steps)
    assert any(step < MAX_STEPS for step in shown_steps), "no progress was seen while it trained"

    # CreateShards: shard by shard, train then validation (3 + 2 shards in luigi.cfg).
    assert final["CreateShards"] == (100, "validation: wrote shard 2 of 2")
    # EvaluateEstimator: the headline numbers of metrics.json (the regression's: MSE, RMSE, MAE).
    metrics = json.loads((_only(watched_run.root / "reports", "sine-mlp-eval-*") / layout.METRICS).read_text())
    validation = metrics["validation"]
    assert final["EvaluateEstimator"] == (
        100,
        f"validation mse {validation['mse']:.4g}, rmse {validation['rmse']:.4g}, mae {validation['mae']:.4g}; "
        f"{metrics['verdict']['status']}",
    )


class _Visualiser(HTMLParser):
    """What Luigi's visualiser shows: the rows of its task table (cell texts), and the
    nodes (task id -> status) and links of its dependency graph."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.nodes: dict[str, str] = {}
        self.links = 0
        self._in_table = self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table" and attributes.get("id") == "taskTable":
            self._in_table = True
        elif self._in_table and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append([])
        elif self._in_body and tag == "td":
            self._cell = []
        elif tag == "a" and attributes.get("class") == "graph-node-a":
            self.nodes[str(attributes["data-task-id"])] = str(attributes["data-task-status"])
        elif tag == "line" and attributes.get("class") == "link":
            self.links += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._in_table = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def chromium(args: list[str], url: str) -> str:
    """Run headless Chromium on `url` (10 s of page time for the UI's API calls); its stdout."""
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make browser` installs it"
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [
                CHROMIUM,
                *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
                *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _visualiser(url: str) -> _Visualiser:
    page = _Visualiser()
    page.feed(chromium(["--dump-dom"], url))
    return page


def _screenshot(url: str, path: Path, size: tuple[int, int]) -> None:
    chromium([f"--screenshot={path}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars"], url)


def test_web_ui_shows_the_four_tasks_done(watched_run: WatchedRun) -> None:
    """The visualiser in headless Chromium, after the run: its task list and its dependency graph."""
    reports = watched_run.root / "reports"
    url = watched_run.scheduler.url  # what a user opens; it redirects to the visualiser

    # Cells of a row: status, name, parameters, priority, time, actions.
    rows = _visualiser(url).rows
    assert sorted((row[1], row[0]) for row in rows) == sorted((family, "DONE") for family in ALL)
    _screenshot(url, reports / "scheduler-tasks.png", (1400, 900))

    ids = {task["name"]: task_id for task_id, task in watched_run.scheduler.tasks("DONE").items()}
    graph_url = f"{url}static/visualiser/index.html#tab=graph&taskId={ids['PlotInference']}"
    graph = _visualiser(graph_url)
    assert graph.nodes == {ids[family]: "DONE" for family in ALL}
    assert graph.links == 6  # PlotInference needs all three upstream stages, EvaluateEstimator two
    _screenshot(graph_url, reports / "scheduler-graph.png", (1400, 700))

    for name, size in (("scheduler-tasks.png", (900, 1400)), ("scheduler-graph.png", (700, 1400))):
        image = matplotlib.image.imread(reports / name)
        assert image.shape[:2] == size
        assert image[..., :3].std() > 0.1  # not a blank page
        (PROJECT_DIR / "reports").mkdir(exist_ok=True)
        shutil.copy(reports / name, PROJECT_DIR / "reports" / name)  # for a person to look at


# --- resources and concurrency ---


def _training_windows(root: Path) -> list[tuple[float, float]]:
    """[started_at, finished_at] of every published model, by start."""
    windows = []
    for model_dir in (root / "models").iterdir():
        marker = markers.read_marker(model_dir)
        assert marker is not None, model_dir
        windows.append((marker["info"]["started_at"], marker["info"]["finished_at"]))
    return sorted(windows)


def test_train_estimator_takes_one_gpu_from_the_pool_in_luigi_cfg() -> None:
    assert TrainEstimator.resources == {"gpu": 1}
    project = configparser.ConfigParser()
    project.read(PROJECT_DIR / "luigi.cfg")
    assert project.getint("resources", "gpu") == 1


def test_four_runs_at_once_run_each_stage_once_and_take_turns_on_the_gpu(tmp_path: Path) -> None:
    """Four `luigi ... PlotInference` started together against one luigid: the same shards,
    three learning rates, one run repeated. The scheduler's own records say what ran when."""
    write_run_config(tmp_path)
    rates = ("0.01", "0.003", "0.03", "0.01")
    logs = [tmp_path / f"luigi-{i}.log" for i in range(len(rates))]
    with running_luigid(tmp_path / "luigid") as scheduler:
        (gpu,) = [r for r in scheduler.api("resource_list") if r["name"] == "gpu"]
        assert gpu["num_total"] == 1  # luigid read the pool from the project's luigi.cfg
        procs = [
            start_luigi(["PlotInference", *scheduler.cli(), "--TrainEstimator-learning-rate", rate], tmp_path, log)
            for rate, log in zip(rates, logs, strict=True)
        ]
        in_use = []  # the gpu units the scheduler counts as taken, polled while the runs go on
        while any(proc.poll() is None for proc in procs):
            (gpu,) = [r for r in scheduler.api("resource_list") if r["name"] == "gpu"]
            in_use.append(gpu["num_used"])
            time.sleep(0.05)
        codes = [proc.wait() for proc in procs]
        tasks = scheduler.tasks()
    texts = [log.read_text() for log in logs]

    assert codes == [0, 0, 0, 0], "\n\n".join(text[-3000:] for text in texts)
    assert {task["status"] for task in tasks.values()} == {"DONE"}
    families = [task["name"] for task in tasks.values()]
    assert {family: families.count(family) for family in ALL} == {
        "CreateShards": 1,
        "TrainEstimator": 3,
        "EvaluateEstimator": 3,
        "PlotInference": 3,
    }
    # Each of those ten tasks ran once, in one of the four runs (a worker logs "running" as it starts one;
    # none was complete before, so each had to run at least once).
    started = [line.split(" running   ", 1)[1] for text in texts for line in text.splitlines() if " running   " in line]
    assert collections.Counter(task.split("(")[0] for task in started) == {
        "CreateShards": 1,
        "TrainEstimator": 3,
        "EvaluateEstimator": 3,
        "PlotInference": 3,
    }
    # The pool was never exceeded: by the scheduler's records, each training held the gpu from the
    # moment it was handed out (time_running) until it was reported done (last_updated), one after another.
    windows = sorted(
        (task["time_running"], task["last_updated"]) for task in tasks.values() if task["name"] == "TrainEstimator"
    )
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(windows)), windows
    assert max(in_use) == 1  # and, polled, it was taken while they trained
    # Nothing left behind: one folder per output, no staging folder, no lock file.
    assert len(list((tmp_path / "data" / "shards").iterdir())) == 1
    assert len(list((tmp_path / "models").iterdir())) == 3
    assert len(list((tmp_path / "reports").iterdir())) == 6
    leftovers = [p for kind in ("data", "models", "reports") for p in (tmp_path / kind).rglob("*.partial")]
    assert leftovers == [] and list((tmp_path / ".locks").glob("*.lock")) == []


def test_two_workers_run_independent_trainings_at_once(tmp_path: Path) -> None:
    """`workers=2` and a pool of 2 gpus: two trainings (of one run) overlap in time."""
    write_run_config(tmp_path)
    code = (
        "import sys, luigi, pipeline\n"
        "port = int(sys.argv[1])\n"
        "tasks = [pipeline.TrainEstimator(learning_rate=rate) for rate in (0.01, 0.003)]\n"
        "result = luigi.build(tasks, workers=2, scheduler_host='127.0.0.1', scheduler_port=port,\n"
        "                     detailed_summary=True, log_level='INFO')\n"
        "sys.exit(0 if result.status == luigi.LuigiStatusCode.SUCCESS else 1)\n"
    )
    with running_luigid(tmp_path / "luigid", resources={"gpu": 2}) as scheduler:
        out = run_cli(["python", "-c", code, str(scheduler.port)], cwd=tmp_path)
        done = scheduler.by_family("DONE")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Running Worker with 2 processes" in out.stderr
    assert {family: len(tasks) for family, tasks in done.items()} == {"CreateShards": 1, "TrainEstimator": 2}
    first, second = _training_windows(tmp_path)
    assert second[0] < first[1]  # the second started before the first ended


def test_a_failed_stage_ends_the_run_instead_of_waiting_for_a_retry(tmp_path: Path) -> None:
    """Workers wait for other workers' tasks (keep_alive), but not for a failed one: Luigi
    would retry it after 15 minutes. It is disabled at once and the run exits non-zero."""
    write_run_config(tmp_path)
    with running_luigid(tmp_path / "luigid") as scheduler:
        proc = start_luigi(
            ["PlotInference", *scheduler.cli(), "--TrainEstimator-learning-rate", "1e30"], tmp_path, tmp_path / "log"
        )
        code = proc.wait(timeout=600)
        statuses = {task["name"]: task["status"] for task in scheduler.tasks().values()}
    log = (tmp_path / "log").read_text()
    assert code == 30, log[-3000:]  # [retcode] task_failed in luigi.cfg
    assert "Training diverged: the loss is nan" in log
    assert statuses == {
        "CreateShards": "DONE",
        "TrainEstimator": "DISABLED",
        "EvaluateEstimator": "PENDING",
        "PlotInference": "PENDING",
    }
