"""Artifacts tampered with are never trusted, and `gc` never reaches outside the artifact root."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline import layout
from pipeline.core import markers
from pipeline.errors import DataError
from pipeline.evaluation import evaluate
from pipeline.tasks import CreateShards, EvaluateEstimator, TrainEstimator
from tests.conftest import SMALL_TRAINING, build, run_cli


def _edit_marker(folder: Path, change: dict, reseal: bool = False) -> None:
    marker = json.loads((folder / markers.MARKER).read_text())
    marker.update(change)
    if reseal:  # a careful forger who recomputed the seal
        markers.seal(marker)
    (folder / markers.MARKER).write_text(json.dumps(marker))


def _cli_config(root: Path) -> None:
    """A luigi.cfg in `root` for commands run there: the artifact root and the small training."""
    train = "".join(f"{k} = {v}\n" for k, v in SMALL_TRAINING.items())
    (root / "luigi.cfg").write_text(f"[paths]\nroot = {root}\n[TrainEstimator]\n{train}")


def test_a_marker_edited_by_hand_makes_its_stage_stale(workspace: Path) -> None:
    build(CreateShards())
    folder = CreateShards().output_dir()
    marker = markers.read_marker(folder)
    assert marker is not None and CreateShards().complete()
    # Claim another content for a shard, as someone "fixing" a marker would.
    shard = layout.shard_name("train", 0, 3)
    true_sha256 = marker["files"][shard]["sha256"]
    _edit_marker(folder, {"files": {**marker["files"], shard: {**marker["files"][shard], "sha256": "0" * 64}}})

    assert markers.read_marker(folder) is None  # nothing downstream reads its content digest
    assert CreateShards().stale_reasons() == [f"marker {markers.MARKER} was edited after it was written: not trusted"]
    assert build(CreateShards()) == {"CreateShards"}  # rebuilt, and trusted again
    assert CreateShards().complete()
    assert markers.read_marker(folder)["files"][shard]["sha256"] == true_sha256  # type: ignore[index]


def test_a_marker_listing_a_file_outside_its_folder_is_not_trusted(
    workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    victim = tmp_path_factory.mktemp("outside") / "victim.txt"
    victim.write_text("not the pipeline's")
    build(CreateShards())
    folder = CreateShards().output_dir()
    marker = markers.read_marker(folder)
    assert marker is not None
    outside = os.path.relpath(victim, folder)  # ../../../..: a path that leaves the folder
    assert outside.startswith("../")
    for rel in (outside, "/etc/passwd", "train/../../x"):
        files = {**marker["files"], rel: {"size": victim.stat().st_size, "mtime_ns": 0, "sha256": "0" * 64}}
        _edit_marker(folder, {"files": files}, reseal=True)
        reasons = CreateShards().stale_reasons()
        assert reasons == [f"marker lists files outside its folder: {rel}: not trusted"], reasons

    # Rebuilding it (the old folder is set aside and removed) and gc leave the listed file alone.
    assert build(CreateShards()) == {"CreateShards"}
    _edit_marker(folder, {"files": files}, reseal=True)
    _cli_config(workspace)
    gc = [
        "python",
        "-m",
        "pipeline",
        "gc",
        "--unused",
        "--older-than",
        "0",
        "--yes",
        "--CreateShards-num-examples",
        "500",
    ]
    out = run_cli(gc, cwd=workspace)
    assert out.returncode == 0, out.stderr
    assert not folder.exists()  # removed as unused by the other configuration...
    assert victim.read_text() == "not the pipeline's"  # ...but not what its marker listed


def test_a_linked_output_folder_is_not_trusted_and_its_target_never_touched(
    workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    build(CreateShards())
    folder = CreateShards().output_dir()
    elsewhere = tmp_path_factory.mktemp("elsewhere") / folder.name
    shutil.move(folder, elsewhere)
    folder.symlink_to(elsewhere, target_is_directory=True)
    before = markers.list_files(elsewhere)

    assert CreateShards().stale_reasons() == [
        f"output folder {folder} is a symbolic link (to {elsewhere}): not trusted"
    ]
    assert build(CreateShards()) == {"CreateShards"}
    assert folder.is_dir() and not folder.is_symlink() and CreateShards().complete()
    assert markers.list_files(elsewhere) == before  # the link was replaced, its target left as it was
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no link left aside

    # A linked file inside a published folder is not trusted either.
    manifest = folder / layout.MANIFEST
    manifest.unlink()
    manifest.symlink_to(elsewhere / layout.MANIFEST)
    assert CreateShards().stale_reasons() == [
        f"output file {layout.MANIFEST} is not a plain file inside its folder (a link?): not trusted"
    ]


def test_gc_removes_links_not_their_targets(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("precious")
    (outside / "model.keras").write_bytes(b"precious bytes")
    (outside / "sub").mkdir()
    (outside / "sub" / "weights").write_bytes(b"more")
    models = workspace / "models"
    models.mkdir()
    (models / "sine-mlp-0123456789ab").symlink_to(outside, target_is_directory=True)
    (models / "sine-mlp-0123456789ab.partial").symlink_to(outside / "sub", target_is_directory=True)
    real = models / "sine-mlp-ba9876543210"
    real.mkdir()
    (real / "escape").symlink_to(outside, target_is_directory=True)  # a link inside a folder gc removes
    (real / "file").write_bytes(b"x" * 10)
    _cli_config(workspace)

    # The links are leftovers; a folder without a marker goes as results do, with --unused.
    gc = ["python", "-m", "pipeline", "gc", "--unused", "--older-than", "0"]
    listed = run_cli(gc, cwd=workspace)
    assert listed.returncode == 0, listed.stderr
    assert "Would remove 3 (10 B)" in listed.stdout, listed.stdout
    removed = run_cli([*gc, "--yes"], cwd=workspace)
    assert removed.returncode == 0, removed.stderr
    assert list(models.iterdir()) == []
    assert (outside / "model.keras").read_bytes() == b"precious bytes"
    assert (outside / "sub" / "weights").read_bytes() == b"more"

    # A kind root that is itself a link: gc does not reach through it.
    shutil.rmtree(models)
    linked_root = tmp_path_factory.mktemp("linked-root")
    (linked_root / "sine-mlp-0123456789ab").mkdir()
    (linked_root / "sine-mlp-0123456789ab" / "x").write_bytes(b"kept")
    models.symlink_to(linked_root, target_is_directory=True)
    refused = run_cli([*gc, "--yes"], cwd=workspace)
    assert refused.returncode == 0, refused.stderr
    assert "not removed: Refusing to remove a folder outside the artifact root" in refused.stdout
    assert (linked_root / "sine-mlp-0123456789ab" / "x").read_bytes() == b"kept"


def test_a_truncated_model_is_stale_and_never_loaded(workspace: Path, tmp_path: Path) -> None:

    build(TrainEstimator())
    model_dir = TrainEstimator().output_dir()
    keras_file = model_dir / layout.KERAS_MODEL
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    for target in (keras_file, copy / layout.KERAS_MODEL):
        with open(target, "r+b") as f:
            f.truncate(target.stat().st_size // 2)

    size = keras_file.stat().st_size
    assert TrainEstimator().stale_reasons() == [
        f"output file {layout.KERAS_MODEL} was altered (size {size}, recorded {_recorded(model_dir)})"
    ]
    # A stage about to read it refuses, naming the damage and the fix.
    with pytest.raises(
        DataError, match=r"TrainEstimator output .* cannot be read: output file model.keras was altered"
    ):
        EvaluateEstimator().run()
    # Loaded directly (a copy outside any marker), it is one clear error too.
    with pytest.raises(DataError, match=rf"{layout.KERAS_MODEL} in {copy} cannot be loaded"):
        evaluate.load_model(copy)
    assert build(TrainEstimator()) == {"TrainEstimator"}  # retrained from its checkpoints' folder afresh
    assert TrainEstimator().complete()


def _recorded(model_dir: Path) -> int:
    marker = json.loads((model_dir / markers.MARKER).read_text())
    return int(marker["files"][layout.KERAS_MODEL]["size"])
