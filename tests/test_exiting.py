"""The `luigi` command's exit without the interpreter's teardown (pipeline/cli/exiting.py).

A real `luigi --module ... --local-scheduler` process, whose module imports `pipeline`, leaves behind
what a run can: an exit handler, a non-daemon thread still working, an idle ThreadPoolExecutor, output
without a newline. The exit keeps the code, runs the handler, waits for the thread and flushes the
output. That the teardown was skipped shows in a C-library exit handler, `abort`, which only `exit()`
runs, after the interpreter's teardown, and `os._exit()` does not."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

TASKS = """
import atexit, concurrent.futures, ctypes, threading, time
from pathlib import Path

import luigi

import pipeline  # noqa: F401  (the results block, and the exit of the `luigi` command)


libc = ctypes.CDLL("libc.so.6")
libc.__cxa_atexit(libc.abort, None, None)  # exit() after the teardown: SIGABRT; os._exit(): not run
atexit.register(lambda: print("exit handler ran", flush=True))
pool = concurrent.futures.ThreadPoolExecutor(1)  # its worker thread waits for work until the exit
pool.submit(lambda: None).result()


def late() -> None:
    time.sleep(0.5)
    Path("late.txt").write_text("joined")


class Work(luigi.Task):
    fail = luigi.BoolParameter()

    def output(self):
        return luigi.LocalTarget("work.txt")

    def run(self):
        threading.Thread(target=late).start()  # not a daemon: the exit waits for it
        if self.fail:
            raise RuntimeError("failed on purpose")
        with self.output().open("w") as f:
            f.write("done")
        print("no newline", end="")
"""

CONFIG = "[paths]\nroot = .\n[retcode]\ntask_failed = 30\n[core]\nno_lock = true\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "exit_tasks.py").write_text(TASKS)
    (tmp_path / "luigi.cfg").write_text(CONFIG)
    return tmp_path


@pytest.mark.parametrize("fail", [False, True])
def test_the_luigi_command_exits_with_its_code_handlers_threads_and_output_done(folder: Path, fail: bool) -> None:
    args = ["luigi", "--module", "exit_tasks", "Work", "--local-scheduler", *(["--fail"] if fail else [])]
    out = run_cli(args, cwd=folder, timeout=120, env={"PYTHONPATH": str(folder)})
    assert out.returncode == (30 if fail else 0), out.stderr[-3000:]
    assert "exit handler ran" in out.stdout
    assert (folder / "late.txt").read_text() == "joined"
    assert ("no newline" in out.stdout) != fail and (folder / "work.txt").exists() != fail
    assert "===== Results =====" in out.stdout


def test_the_same_module_imported_by_python_ends_in_the_c_librarys_exit(folder: Path) -> None:
    """The check above can fail: a process that exits as Python does reaches `exit()`, whose handler aborts."""
    out = subprocess.run(
        [sys.executable, "-c", "import exit_tasks"], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == -signal.SIGABRT, (out.returncode, out.stderr[-3000:])
    assert "exit handler ran" in out.stdout


def test_a_program_calling_luigi_run_catches_its_system_exit_and_goes_on(folder: Path) -> None:
    """Only the `luigi` console script exits at once: a program of its own gets Luigi's SystemExit as before."""
    program = (
        "import luigi.cmdline\n"
        "try:\n"
        "    luigi.cmdline.luigi_run(['--module', 'exit_tasks', 'Work', '--local-scheduler'])\n"
        "except SystemExit as stop:\n"
        "    print('caught', stop.code, flush=True)\n"
        "import os; os._exit(0)  # past the C-library exit handler the module registers\n"
    )
    out = run_cli(["python", "-c", program], cwd=folder, timeout=120, env={"PYTHONPATH": str(folder)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "caught 0"
    assert "exit handler ran" not in out.stdout  # the exit handlers wait for the program's own exit
