"""Images as users have them (pipeline/etl/sources.py, image_folder.py, listing.py): every extension Keras reads,
in any letter case, every Pillow mode as the RGB picture it shows, nested class folders, other files named
and not silently dropped, unreadable files skipped on request. Pixel values are checked through the ETL."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import numpy as np
import pytest
from luigi.task_register import Register
from PIL import Image

from pipeline import __main__ as cli
from pipeline import layout, schema
from pipeline.core import markers
from pipeline.etl import shards, sources
from pipeline.tasks import CreateShards
from tests.conftest import Config, build
from tests.test_images import _parse_all

SIZE = 16  # images are written at the size the ETL makes them: no resizing, so pixels compare exactly
WHITE = np.array(sources.BACKGROUND, np.float64)


def _ramp() -> np.ndarray:
    """A 16 x 16 ramp over 0..255, different in every pixel."""
    return np.arange(SIZE * SIZE, dtype=np.float64).reshape(SIZE, SIZE) * 255 / (SIZE * SIZE - 1)


def _colours() -> np.ndarray:
    """A 16 x 16 RGB picture whose three channels differ from each other and across the picture."""
    ramp = _ramp()
    return np.rint(np.stack([ramp, ramp[::-1], ramp.T], axis=-1)).astype(np.uint8)


def _palette_picture() -> tuple[Image.Image, np.ndarray]:
    """A palette picture of 3 colours whose index 0 is transparent, and the RGB it shows on the background."""
    index = (np.add.outer(np.arange(SIZE), np.arange(SIZE)) % 3).astype(np.uint8)
    colours = np.array([[10, 20, 30], [200, 0, 0], [0, 90, 250]], np.uint8)
    picture = Image.frombytes("P", (SIZE, SIZE), index.tobytes())
    picture.putpalette(colours.ravel().tolist())
    expected = colours[index].astype(np.float64)
    expected[index == 0] = WHITE
    return picture, expected


def write_every_kind(folder: Path) -> dict[str, tuple[np.ndarray, float]]:
    """Write one image of each kind into `folder/<class>/`; relative path -> (expected RGB, tolerance)."""
    expected: dict[str, tuple[np.ndarray, float]] = {}
    colours = _colours()

    def save(rel: str, image: Image.Image, rgb: np.ndarray, tolerance: float = 0.0, **options: Any) -> None:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / rel, **options)
        expected[rel] = (np.asarray(rgb, np.float64), tolerance)

    # Every extension Keras reads, in any letter case.
    save("a/colours.png", Image.fromarray(colours), colours)
    save("a/colours.BMP", Image.fromarray(colours), colours, format="BMP")
    jpeg = {"format": "JPEG", "quality": 95, "subsampling": 0}
    save("b/colours.Jpeg", Image.fromarray(colours), colours, tolerance=12, **jpeg)
    save("b/colours.JPG", Image.fromarray(colours), colours, tolerance=12, **jpeg)
    # Grayscale, and 16-bit grayscale scaled to 8 bits (not clipped: Pillow's convert would make it white).
    gray = np.rint(_ramp()).astype(np.uint8)
    save("a/gray.png", Image.fromarray(gray), np.stack([gray] * 3, axis=-1))
    wide = np.rint(_ramp() * 257).astype(np.uint16)  # 0..65535
    save("a/gray16.png", Image.fromarray(wide), np.stack([np.rint(wide / 257)] * 3, axis=-1))
    # RGBA composited on the background: out = rgb * alpha + background * (1 - alpha).
    alpha = np.rint(_ramp()).astype(np.uint8)
    rgba = np.dstack([colours, alpha])
    on_white = colours * (alpha[..., None] / 255) + WHITE * (1 - alpha[..., None] / 255)
    save("b/rgba.png", Image.fromarray(rgba), on_white, tolerance=1)
    # A palette with a transparent entry, as PNG and as GIF (its first frame; the second is another picture).
    picture, shown = _palette_picture()
    save("a/palette.png", picture, shown, transparency=0)
    second = Image.frombytes("P", (SIZE, SIZE), bytes([2]) * SIZE * SIZE)
    second.putpalette(picture.getpalette() or [])
    save("b/palette.gif", picture, shown, save_all=True, append_images=[second], transparency=0)
    # CMYK (a JPEG, as print workflows write them): cyan, magenta, half black, none.
    cmyk = np.zeros((SIZE, SIZE, 4), np.uint8)
    cmyk[:8, :8, 0], cmyk[:8, 8:, 1], cmyk[8:, :8, 3] = 255, 255, 128
    rgb = np.zeros((SIZE, SIZE, 3))
    rgb[:8, :8], rgb[:8, 8:], rgb[8:, :8], rgb[8:, 8:] = (0, 255, 255), (255, 0, 255), (127, 127, 127), WHITE
    save("a/cmyk.JPG", Image.frombytes("CMYK", (SIZE, SIZE), cmyk.tobytes()), rgb, tolerance=12, **jpeg)
    # EXIF orientation 6: the camera was turned; shown upright, the red top-left quadrant is top right.
    stored = np.zeros((SIZE, SIZE, 3), np.uint8)
    stored[...] = (0, 0, 255)
    stored[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("b/turned.png", Image.fromarray(stored), np.rot90(stored, k=-1), exif=exif)
    # Bilevel, in a nested subfolder of its class: it counts for that class.
    checks = (np.add.outer(np.arange(SIZE), np.arange(SIZE)) % 2).astype(bool)
    save("b/nested/deeper/bilevel.bmp", Image.fromarray(checks), np.stack([checks * 255.0] * 3, axis=-1))
    return expected


@pytest.fixture
def images(workspace: Path, config: Config) -> Iterator[tuple[Path, dict[str, tuple[np.ndarray, float]]]]:
    folder = workspace / "photos"
    expected = write_every_kind(folder)
    config.set("CreateShards", "image_dir", folder)
    config.set("CreateShards", "image_size", SIZE)
    config.set("CreateShards", "num_train_shards", 1)
    config.set("CreateShards", "num_validation_shards", 1)
    Register.clear_instance_cache()
    yield folder, expected


def test_every_extension_and_mode_comes_out_as_the_picture_it_shows(
    images: tuple[Path, dict[str, tuple[np.ndarray, float]]],
) -> None:
    _, expected = images
    assert build(CreateShards()) == {"CreateShards"}
    shards_dir = CreateShards().output_dir()
    manifest = schema.read_manifest(shards_dir)
    assert manifest["class_names"] == ["a", "b"]
    counts = manifest["class_counts"]
    assert {name: counts["train"][name] + counts["validation"][name] for name in ("a", "b")} == {"a": 6, "b": 6}
    seen = {}
    for split in layout.SPLITS:
        for example in _parse_all(shards_dir, split):
            rel = example["path"].decode()
            seen[rel] = np.asarray(Image.open(io.BytesIO(example["image"])), np.float64)
            assert manifest["class_names"][example["label"]] == rel.split("/")[0]
    assert sorted(seen) == sorted(expected)
    for rel, (rgb, tolerance) in expected.items():
        error = np.abs(seen[rel] - rgb).max()
        assert error <= tolerance, f"{rel}: off by up to {error}"
    assert seen["a/gray16.png"].max() == 255 and seen["a/gray16.png"].mean() < 200  # scaled, not clipped white
    assert seen["b/palette.gif"][0, 0].tolist() == [255.0, 255.0, 255.0]  # transparent: the stated background


def test_other_files_are_named_and_unreadable_ones_skipped_on_request(
    images: tuple[Path, dict[str, tuple[np.ndarray, float]]],
    config: Config,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder, expected = images
    (folder / "a" / "notes.txt").write_text("not an image")
    (folder / "b" / "scan.tiff").write_bytes(b"a TIFF: not read by Keras either")
    (folder / "README.md").write_text("files beside the class folders belong to no class")
    (folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    (folder / "b" / "empty.JPG").write_bytes(b"")

    result = luigi.build([CreateShards()], local_scheduler=True, detailed_summary=True, log_level="WARNING")
    assert result.status == luigi.LuigiStatusCode.FAILED  # by default an unreadable file stops the ETL
    assert not CreateShards().output_dir().exists()

    config.set("CreateShards", "skip_unreadable", "true")
    Register.clear_instance_cache()
    caplog.set_level(logging.WARNING, logger="luigi-interface")
    assert build(CreateShards()) == {"CreateShards"}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert re.search(r"3 file\(s\) in .*photos are ignored, .*: README\.md, a/notes\.txt, b/scan\.tiff", logged)
    assert "2 unreadable file(s) skipped" in logged

    manifest = schema.read_manifest(CreateShards().output_dir())
    skipped = manifest["skipped_unreadable"]
    assert [Path(line.split(" (")[0]).relative_to(folder).as_posix() for line in skipped] == [
        "a/broken.png",
        "b/empty.JPG",
    ]
    assert manifest["ignored_files"] == {"count": 3, "first": ["README.md", "a/notes.txt", "b/scan.tiff"]}
    counts = manifest["class_counts"]
    assert sum(counts["train"].values()) == manifest["splits"]["train"]["num_examples"]
    assert sum(map(sum, (c.values() for c in counts.values()))) == len(expected)  # the readable images, each once
    assert sorted(shards.read_source_sha256(CreateShards().output_dir())) == sorted(expected)
    marker = markers.read_marker(CreateShards().output_dir())
    assert marker is not None and marker["info"]["skipped_unreadable"] == 2

    capsys.readouterr()
    assert cli.main(["status", "CreateShards"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^CreateShards\s+up to date", out, re.M)
    assert "note: 3 file(s) in " in out and "README.md, a/notes.txt, b/scan.tiff" in out
    assert "note: 2 unreadable file(s) skipped (--CreateShards-skip-unreadable)" in out
    assert json.loads((CreateShards().output_dir() / layout.MANIFEST).read_text()) == manifest
