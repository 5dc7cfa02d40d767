"""Once per invocation (pipeline/core/invocation.py): a source folder is listed once and each stage's identity is
computed once per command, and what the command itself writes (the demo images) is seen."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator
from pathlib import Path

import luigi
import luigi.execution_summary
import luigi.interface
import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register

from pipeline import __main__ as cli
from pipeline import layout, schema
from pipeline.core import listing, stage
from pipeline.etl import shards
from pipeline.tasks import CreateShards
from tests.conftest import Config, build, make_root, run_cli
from tests.test_listing import _image_folder

DEMO = ["--MakeShapes-images-per-class", "4", "--MakeShapes-image-size", "16", "--CreateShards-image-size", "16"]


def luigi_command(*args: str) -> set[str]:
    """`luigi --module pipeline ARGS --local-scheduler`, in this process (no pid lock: as luigi.build); what ran."""
    result = luigi.interface.run([*args, "--local-scheduler", "--no-lock"], detailed_summary=True)
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    return {task.task_family for task in luigi.execution_summary._summary_dict(result.worker)["completed"]}


class Counts:
    """How often the folder was listed and each stage's identity computed."""

    def __init__(self) -> None:
        self.scans = 0
        self.identities: collections.Counter[str] = collections.Counter()

    def clear(self) -> None:
        self.scans = 0
        self.identities.clear()
        Register.clear_instance_cache()  # a new command builds its tasks anew


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    counted = Counts()
    scan, compute = listing.scan, stage.Stage._compute_identity

    def counted_scan(folder: Path) -> listing.Listing:
        counted.scans += 1
        return scan(folder)

    def counted_compute(task: stage.Stage) -> stage.Identity:
        counted.identities[task.task_family] += 1
        return compute(task)

    monkeypatch.setattr(listing, "scan", counted_scan)
    monkeypatch.setattr(stage.Stage, "_compute_identity", counted_compute)
    yield counted


def test_a_command_lists_the_folder_once_and_computes_each_identity_once(
    workspace: Path, config: Config, counts: Counts, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _image_folder(workspace, classes=2, per_class=30)
    (folder / "c0" / "notes.txt").write_text("not an image")
    config.set("CreateShards", "image_dir", folder)
    config.set("CreateShards", "image_size", 16)
    config.set("TrainEstimator", "batch_size", 32)  # the 40 training images (a larger batch is refused)
    build(CreateShards())

    counts.clear()
    assert cli.main(["status", "PlotInference"]) == 1  # stale: three stages have no output yet
    out = capsys.readouterr().out
    assert out.count("no output yet") == 3 and re.search(r"^CreateShards\s+up to date", out, re.M)
    assert "note: 1 file(s) in " in out and "are ignored, being no .bmp, .gif, .jpeg, .jpg, .png file" in out
    # Validation, the identity of every stage, completion and the note on ignored files: one pass.
    assert counts.scans == 1
    assert counts.identities == {"CreateShards": 1, "TrainEstimator": 1, "EvaluateEstimator": 1, "PlotInference": 1}

    counts.clear()
    assert luigi_command("CreateShards") == set()  # up to date
    assert (counts.scans, counts.identities) == (1, {"CreateShards": 1})

    # A run lists once more when it starts: it reads the folder as it is then, for its identity and the ETL.
    (folder / "c1" / "new.png").write_bytes((folder / "c1" / "0000.png").read_bytes())
    counts.clear()
    assert luigi_command("CreateShards") == {"CreateShards"}
    assert (counts.scans, counts.identities) == (2, {"CreateShards": 2})
    counts.clear()
    assert luigi_command("CreateShards") == set()
    assert counts.scans == 1


def test_a_run_shards_the_folder_as_it_is_when_the_run_starts(workspace: Path, config: Config) -> None:
    """An image added after the task was built (and checked) is in the shards, and in their identity."""
    folder = _image_folder(workspace, classes=2, per_class=30)
    config.set("CreateShards", "image_dir", folder)
    config.set("CreateShards", "image_size", 16)
    Register.clear_instance_cache()
    task = CreateShards()
    assert not task.complete()
    (folder / "c1" / "late.png").write_bytes((folder / "c1" / "0000.png").read_bytes())
    assert build(task) == {"CreateShards"}
    manifest = schema.read_manifest(task.output_dir())
    assert sum(manifest["splits"][split]["num_examples"] for split in layout.SPLITS) == 61
    assert "c1/late.png" in shards.read_source_sha256(task.output_dir())
    Register.clear_instance_cache()
    assert CreateShards().complete() and CreateShards().output_dir() == task.output_dir()


def test_the_demo_made_and_sharded_in_one_command(workspace: Path, counts: Counts) -> None:
    """MakeShapes writes CreateShards' source folder while the command runs: CreateShards sees the images."""
    demo = workspace / "data" / "raw" / "shapes"
    assert luigi_command("CreateShards", "--CreateShards-image-dir", str(demo), *DEMO) == {"MakeShapes", "CreateShards"}
    command = ["CreateShards", "--CreateShards-image-dir", str(demo), *DEMO]
    with CmdlineParser.global_instance(command) as parser:  # a new command: its own memo
        assert parser.get_task_obj().complete()  # published under the identity of the 20 images it read
        assert listing.of(demo).num_images == 20


def test_workers_in_other_processes_see_what_each_other_published(tmp_path: Path) -> None:
    """Repro with 2 workers from an empty root: each stage runs in a process forked from the scheduling one,
    whose memo was made before MakeShapes wrote the images; the publish log tells it (no endless rerun)."""
    make_root(tmp_path)
    command = ["Repro", "--target", "CreateShards", "--CreateShards-image-dir", "data/raw/shapes", *DEMO]
    run = run_cli(["luigi", "--module", "pipeline", *command, "--workers", "2", "--local-scheduler"], tmp_path, 120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "3 ran successfully" in run.stderr, run.stderr[-3000:]
    status = run_cli(["python", "-m", "pipeline", "status", "CreateShards", *command[3:]], tmp_path)
    assert status.stdout.count("up to date") == 2, status.stdout
