"""The warm runner of light TensorFlow stages (pipeline/runtime/warm.py), driven as a Luigi worker drives it.

A fresh process plays the worker (it has never started TensorFlow's runtime): it
starts the runner, then forks children that send it builds, as Luigi's worker
forks a child per task. The stage is a small task of the script's own, whose
build says where it ran, reports progress, fails or sleeps.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import PROJECT_DIR, VENV_BIN

SCRIPT = r'''
import json, os, signal, sys, time
from pathlib import Path

import luigi

from pipeline.runtime import warm

staging = Path(sys.argv[1])
said = []


class Probe(luigi.Task):
    runs_warm = True
    mode = luigi.Parameter()

    def progress(self, fraction, message):  # the child's own: what it shows at the console and in the UI
        said.append([os.getpid(), fraction, message])

    def build(self, folder):
        if self.mode == "fail":
            raise ValueError(f"no such column in {folder.name}")
        if self.mode == "sleep":
            (folder / "started").write_text(str(os.getpid()))
            time.sleep(60)
        if self.mode == "once" and not (folder / "once").exists():  # the first try sleeps, a second one does not
            (folder / "once").write_text(str(os.getpid()))
            time.sleep(60)
        self.progress(0.5, "half way")
        return {"built_by": os.getpid()}


def child(mode, out):
    """As a forked Luigi task process: one build through warm.build; what came of it, as JSON in `out`."""
    pid = os.fork()
    if pid:
        return pid
    try:
        info, cpu, where = warm.build(Probe(mode=mode), staging)
        result = {"info": info, "where": where, "cpu": cpu, "said": said, "me": os.getpid()}
    except Exception as error:
        cause = error.__cause__
        result = {"error": f"{type(error).__name__}: {error}", "cause": str(cause), "me": os.getpid()}
    Path(out).write_text(json.dumps(result))
    os._exit(0)


def finished(pid, out):
    os.waitpid(pid, 0)
    return json.loads(Path(out).read_text())


report = {}
warm.ensure_runners(1)
first = warm._runners[0].pid
report["runner"] = first
report["ok"] = finished(child("progress", "ok.json"), "ok.json")
report["fail"] = finished(child("fail", "fail.json"), "fail.json")

# One build at a time: while a child's build sleeps there, another child builds in its own process.
sleeper = child("sleep", "sleep.json")
while not (staging / "started").exists():
    time.sleep(0.01)
report["busy"] = finished(child("progress", "busy.json"), "busy.json")
# The sleeping child is killed (a timeout, SIGKILL): the runner does not go on building for nobody.
os.kill(sleeper, signal.SIGKILL)
os.waitpid(sleeper, 0)
deadline = time.monotonic() + 10
while warm._alive(first) and time.monotonic() < deadline:
    time.sleep(0.01)
report["runner_alive_after_kill"] = warm._alive(first)
report["gone_after"] = round(10 - (deadline - time.monotonic()), 2)
report["fallback_when_dead"] = finished(child("progress", "dead.json"), "dead.json")
# The worker's next fork of a TensorFlow stage starts a new runner, which builds again.
warm.ensure_runners(1)
report["second_runner"] = warm._runners[0].pid
report["again"] = finished(child("progress", "again.json"), "again.json")
# The runner killed mid-build (a crash, the OOM killer): the child builds in its own process instead.
crashing = child("once", "once.json")
while not (staging / "once").exists():
    time.sleep(0.01)
os.kill(int((staging / "once").read_text()), signal.SIGKILL)
report["runner_crashed"] = finished(crashing, "once.json")
print(json.dumps(report))
'''


def test_the_runner_builds_reports_progress_raises_and_never_outlives_its_child(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = {"PYTHONPATH": str(PROJECT_DIR), "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [str(VENV_BIN / "python"), str(script), str(staging)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    runner = report["runner"]

    # Built in the runner, not in the child; its progress reached the child, which showed it.
    ok = report["ok"]
    assert ok["info"] == {"built_by": runner} and ok["me"] != runner
    assert ok["where"] == {"pid": runner, "builds_before": 0}
    assert ok["said"] == [[ok["me"], 0.5, "half way"]]
    assert ok["cpu"] > 0  # the runner's CPU seconds for the build, which the stage adds to its own
    # The build's exception is raised in the child, the same type and message, the runner's traceback its cause.
    fail = report["fail"]
    assert fail["error"] == "ValueError: no such column in staging"
    assert 'raise ValueError(f"no such column in {folder.name}")' in fail["cause"]
    assert "in build" in fail["cause"]
    # Busy: built by the child itself, at once.
    busy = report["busy"]
    assert busy["info"] == {"built_by": busy["me"]} and busy["where"] == {}
    # The killed child's runner ended within a few of its polls; meanwhile builds stay in the child.
    assert report["runner_alive_after_kill"] is False and report["gone_after"] < 2
    dead = report["fallback_when_dead"]
    assert dead["info"] == {"built_by": dead["me"]} and dead["where"] == {}
    second = report["second_runner"]
    assert second != runner
    assert report["again"]["info"] == {"built_by": second} and report["again"]["where"]["pid"] == second
    crashed = report["runner_crashed"]
    assert crashed["info"] == {"built_by": crashed["me"]} and crashed["where"] == {}
    assert crashed["said"] == [[crashed["me"], 0.5, "half way"]]
