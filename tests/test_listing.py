"""One pass over a source folder (pipeline/core/listing.py), made once per invocation (pipeline/core/invocation.py):
what it finds, that it misses no change, and how often it runs."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from luigi.task_register import Register
from PIL import Image

from pipeline import __main__ as cli
from pipeline.core import listing
from pipeline.etl import shapes
from pipeline.tasks import CreateShards
from tests.conftest import Config, build


def records_digest(folder: Path) -> str:
    """The documented digest, computed another way: each folder's files by name, then its subfolders."""
    records = []

    def visit(path: Path, prefix: str) -> None:
        children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        for child in children:
            if child.is_file():
                st = child.stat()
                records.append(f"{prefix}{child.name}\0{st.st_size} {st.st_mtime_ns}\0")
        for child in children:
            if child.is_dir():
                visit(child, f"{prefix}{child.name}/")

    visit(folder, "")
    return hashlib.sha256("".join(records).encode()).hexdigest()


def test_scan_follows_links_once_and_skips_hidden_and_broken(tmp_path: Path) -> None:
    empty = listing.scan(tmp_path / "not-yet")  # MakeShapes has not written it yet
    assert (empty.num_files, empty.classes, empty.digest) == (0, {}, hashlib.sha256().hexdigest())
    folder = tmp_path / "images"
    (folder / "cat" / "deeper").mkdir(parents=True)
    (folder / "cat" / "a.png").write_bytes(b"12345")
    (folder / "cat" / "deeper" / "b.PNG").write_bytes(b"1")
    (folder / "cat" / "notes.txt").write_bytes(b"not an image")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    (folder / "cat" / ".DS_Store").write_text("x")
    elsewhere = tmp_path / "dogs"
    elsewhere.mkdir()
    (elsewhere / "c.gif").write_bytes(b"123")
    (folder / "dog").symlink_to(elsewhere)  # a class folder linked in
    (folder / "cat" / "loop").symlink_to(folder / "cat")  # a cycle: listed once
    (folder / "cat" / "gone.png").symlink_to(tmp_path / "missing.png")  # broken
    found = listing.scan(folder)
    assert found.classes == {"cat": ["cat/a.png", "cat/deeper/b.PNG"], "dog": ["dog/c.gif"]}
    assert (found.num_files, found.num_images, found.num_ignored, found.ignored) == (4, 3, 1, ("cat/notes.txt",))
    # The loop is not followed (records_digest does not follow it either: it skips nothing else).
    (folder / "cat" / "loop").unlink()
    (folder / "cat" / "gone.png").unlink()
    assert found.digest == records_digest(folder)
    (elsewhere / "c.gif").write_bytes(b"12")  # a change behind the link is a change of the listing
    assert listing.scan(folder).digest == records_digest(folder) != found.digest


def _image_folder(root: Path, classes: int, per_class: int) -> Path:
    """`classes` x `per_class` PNGs, hard links to 10 small shapes (a few thousand files in a second)."""
    pool = root / "pool"
    pool.mkdir(parents=True)
    for i in range(10):
        Image.fromarray(shapes.draw_shape("circle" if i % 2 else "star", 16, 3, i)).save(pool / f"{i}.png")
    folder = root / "images"
    for k in range(classes):
        (folder / f"c{k}").mkdir(parents=True)
        for i in range(per_class):
            os.link(pool / f"{(k + i) % 10}.png", folder / f"c{k}" / f"{i:04d}.png")
    return folder


def _stale(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """CreateShards' reasons to rerun, from `python -m pipeline status` (one command), checked against complete()."""
    capsys.readouterr()
    code = cli.main(["status", "CreateShards"])
    out = capsys.readouterr().out
    reasons = re.findall(r"^\s+- (.*)$", out, re.M)
    assert code == (1 if reasons else 0)  # status exits with 1 when something is stale
    assert bool(re.search(r"^CreateShards\s+up to date", out, re.M)) == (not reasons)
    Register.clear_instance_cache()
    assert CreateShards().complete() == (not reasons)
    return reasons


def test_every_change_to_a_few_thousand_files_is_seen(
    workspace: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _image_folder(workspace, classes=3, per_class=1000)
    config.set("CreateShards", "image_dir", folder)
    config.set("CreateShards", "image_size", 16)
    Register.clear_instance_cache()
    assert build(CreateShards()) == {"CreateShards"}
    assert _stale(capsys) == []
    changed = ["source folder image_dir changed (files added, removed or modified)"]
    image = folder / "c1" / "0500.png"
    st, original = image.stat(), image.read_bytes()

    (folder / "c2" / "new.png").write_bytes(original)  # added
    assert _stale(capsys) == changed
    (folder / "c2" / "new.png").unlink()
    assert _stale(capsys) == []

    image.unlink()  # removed
    assert _stale(capsys) == changed
    os.link(folder / "c1" / "0510.png", image)  # the same inode again: same size, same mtime
    assert _stale(capsys) == []

    image.unlink()
    image.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # other bytes, same size, new mtime
    assert image.stat().st_size == st.st_size and image.stat().st_mtime_ns != st.st_mtime_ns
    assert _stale(capsys) == changed
    image.write_bytes(original)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _stale(capsys) == []

    (folder / "c1").rename(folder / "c1-renamed")  # a class folder renamed
    assert _stale(capsys) == changed
    (folder / "c1-renamed").rename(folder / "c1")
    assert _stale(capsys) == []
