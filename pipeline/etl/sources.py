"""Raw example sources: the seed's noisy sine, a user's folder of images, a user's table (CSV).

A source returns its examples already shuffled once, globally, and split into
train and validation: the two never mix downstream. Its interface, used by
`CreateShards` and `shards.create_shards`: `validate()` raises ValueError on a
bad source before any work (on Luigi's scheduling path: the standard library
only, NumPy and Pillow are imported where rows are made), `schema()` says what
the shards will hold before they exist (the problem, the input shape, the
classes), `rows()` gives the rows per split, `to_features` is a module-level
encoder of one row (sent to the writer processes; it reads and decodes each
input once, and raises `shards.UnreadableRowError` for one it cannot read),
`unreadable()` words the error naming those (`skip_unreadable`: whether they
are left out instead), and `manifest()` says what downstream stages need to
know, the problem first (`manifest(skipped)`: without the rows left out).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from pipeline.core import invocation, listing
from pipeline.etl import image_folder
from pipeline.etl.tables import TableSource, split_counts
from pipeline.schema import Schema

__all__ = ["ImageFolderSource", "SineSource", "TableSource", "split_counts"]

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


X_MIN, X_MAX = -4 * math.pi, 4 * math.pi


@dataclass(frozen=True)
class SineSource:
    """The seed experiment: y = sin(x) + 1 + N(0, noise_stddev²) on an even grid."""

    kind = "sine"

    num_examples: int = 1024
    noise_stddev: float = 0.1
    validation_fraction: float = 1 / 3
    seed: int = 1234

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.num_examples < 2:
            raise ValueError(f"num_examples must be at least 2. Received: num_examples={self.num_examples}")
        if not 0 < self.validation_fraction < 1 or math.isnan(self.validation_fraction):
            raise ValueError(
                "validation_fraction must be strictly between 0 and 1. "
                f"Received: validation_fraction={self.validation_fraction}"
            )
        if not self.noise_stddev >= 0:
            raise ValueError(f"noise_stddev must be >= 0. Received: noise_stddev={self.noise_stddev}")
        num_validation = self.num_validation
        if num_validation == 0 or num_validation == self.num_examples:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} of num_examples={self.num_examples} "
                "leaves one split empty: choose a fraction that keeps examples on both sides."
            )

    def check(self) -> None:
        """Raise ValueError on bad fields."""
        self.validate()

    def schema(self) -> Schema:
        num_validation = self.num_validation
        return Schema(
            "regression", (1,), (), {"train": self.num_examples - num_validation, "validation": num_validation}
        )

    @property
    def to_features(self) -> Any:
        return sine_features

    @property
    def num_validation(self) -> int:
        return int(self.num_examples * self.validation_fraction)

    def splits(self) -> dict[str, dict[str, np.ndarray]]:
        """Columns `x`, `y` (float32, shape [n]) per split, in shuffled order.

        The noise is drawn first and the permutation second from one
        `RandomState(seed)`, as the seed experiment did; the first
        `num_validation` permuted examples are the validation set.
        """
        import numpy as np

        rs = np.random.RandomState(self.seed)
        x = np.linspace(X_MIN, X_MAX, self.num_examples)
        y = true_function(x) + rs.normal(0.0, self.noise_stddev, self.num_examples)
        order = rs.permutation(self.num_examples)
        val, train = order[: self.num_validation], order[self.num_validation :]
        return {
            "train": {"x": x[train].astype(np.float32), "y": y[train].astype(np.float32)},
            "validation": {"x": x[val].astype(np.float32), "y": y[val].astype(np.float32)},
        }

    def rows(self) -> dict[str, list[tuple[float, float]]]:
        """(x, y) pairs per split, in shuffled order: what the shard writers take."""
        return {split: list(zip(c["x"].tolist(), c["y"].tolist(), strict=True)) for split, c in self.splits().items()}

    def manifest(self) -> dict[str, Any]:
        """What downstream stages need to know of this source."""
        import numpy as np

        # The noiseless function, for figures: data here, so that plots know nothing of sines.
        grid = np.linspace(X_MIN, X_MAX, REFERENCE_POINTS)
        return {
            "source": self.kind,
            "problem": "regression",
            "features": {"x": {"dtype": "float32", "shape": [1]}, "y": {"dtype": "float32", "shape": [1]}},
            "inputs": "x",
            "label": "y",
            "reference_curve": {
                "label": "sin(x) + 1 (noiseless)",
                "x": [round(v, 6) for v in grid.tolist()],
                "y": [round(v, 6) for v in true_function(grid).tolist()],
            },
        }


def sine_features(row: tuple[float, float]) -> tuple[dict[str, list[float]], dict[str, str]]:
    """The Example features of one (x, y) row (no source file read)."""
    return {"x": [row[0]], "y": [row[1]]}, {}


def true_function(x: np.ndarray) -> np.ndarray:
    """The noiseless target, sin(x) + 1."""
    import numpy as np

    return np.sin(x) + 1.0


REFERENCE_POINTS = 400  # points of the noiseless curve kept in the manifest


# --- a folder of images, one subfolder per class ---------------------------------------

# What a row of an image folder is: (the folder, the image's path relative to it, label, image size).
# The folder is one string shared by every row: a million rows cost no path each.
ImageRow = tuple[str, str, int, int]
MAX_NAMED_FILES = 10  # unreadable files named in one error message
# Transparent pixels are composited on this colour (the README says so): white, as most viewers show them.
BACKGROUND = (255, 255, 255)
# 16-bit grayscale as Pillow holds it (a 16-bit PNG opens as I;16), scaled to 8 bits by `to_rgb`.
WIDE_GRAY_MODES = frozenset(("I;16", "I;16L", "I;16B", "I;16N", "I"))

logger = logging.getLogger("luigi-interface")  # Luigi prints this logger in its run log


class ImageRows(Sequence[ImageRow]):
    """One split's rows, made when asked for: row i is image `order[i]` of `files`, with its label.

    A million rows cost the split's order (8 bytes each) beside the listing's
    file names, not a million tuples: the shard writers take them 64 at a time.
    """

    def __init__(self, base: str, files: list[str], labels: np.ndarray, order: np.ndarray, size: int) -> None:
        self.base, self.files, self.labels, self.order, self.size = base, files, labels, order, size

    def __len__(self) -> int:
        return len(self.order)

    @overload
    def __getitem__(self, index: int) -> ImageRow: ...
    @overload
    def __getitem__(self, index: slice) -> list[ImageRow]: ...
    def __getitem__(self, index: int | slice) -> ImageRow | list[ImageRow]:
        if isinstance(index, slice):
            return [self._row(i) for i in self.order[index].tolist()]
        return self._row(int(self.order[index]))

    def __iter__(self) -> Iterator[ImageRow]:
        for start in range(0, len(self), 1024):
            yield from self[start : start + 1024]

    def _row(self, i: int) -> ImageRow:
        return self.base, self.files[i], int(self.labels[i]), self.size


@dataclass(frozen=True)
class ImageFolderSource:
    """Images in `image_dir/<class>/` (at any depth), resized to `image_size` squares, split per class.

    Images are the files Keras' `image_dataset_from_directory` reads: .bmp,
    .gif, .jpeg, .jpg and .png, in any letter case (`listing.IMAGE_EXTENSIONS`).
    The split is stratified: each class's files (in the listing's order) are
    shuffled with `seed` and its first `round(n * validation_fraction)` go to
    validation; each split is then shuffled again, globally, so shards mix
    the classes. With `skip_unreadable`, files that cannot be read as images
    are left out (the manifest lists them) instead of stopping the ETL.
    """

    kind = "image_folder"

    image_dir: Path
    image_size: int
    validation_fraction: float
    seed: int
    skip_unreadable: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_dir", Path(self.image_dir))  # given as the parameter's string

    @property
    def folder_listing(self) -> listing.Listing:
        """The folder's listing, checked (ValueError on an unusable layout).

        Not kept here: it is the invocation's (`listing.of`), so that in a run
        the shards are made from the listing the stage's identity holds, made
        when the run started, not from one made when the task was scheduled.
        """
        with invocation.scope():  # the layout check and this share one pass over the folder
            image_folder.check_layout(self.image_dir, self.validation_fraction)
            return listing.of(self.image_dir)

    @property
    def classes(self) -> dict[str, list[str]]:
        """Class name -> relative image paths."""
        return self.folder_listing.classes

    def validate(self) -> None:
        """Raise ValueError on a bad image size or an unusable folder layout."""
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels. Received: image_size={self.image_size}")
        self.folder_listing  # noqa: B018 (listed and checked once)

    def check(self) -> None:
        """Raise ValueError on an unusable folder layout (each image is checked as it is encoded);
        log the files that are not images of a class."""
        self.validate()
        ignored = image_folder.describe_ignored(self.folder_listing)
        if ignored:
            logger.warning(ignored)

    def schema(self) -> Schema:
        classes = self.classes
        counts = {"train": 0, "validation": 0}
        for files in classes.values():
            for split, count in split_counts(len(files), self.validation_fraction).items():
                counts[split] += count
        return Schema("classification", (self.image_size, self.image_size, 3), tuple(classes), counts)

    def unreadable(self, errors: list[str], count: int) -> str:
        """The message naming the files `image_features` could not read (up to `MAX_NAMED_FILES`)."""
        more = f"; and {len(errors) - MAX_NAMED_FILES} more" if len(errors) > MAX_NAMED_FILES else ""
        return (
            f"{len(errors)} of the {count} image files in {self.image_dir} cannot be read as images: "
            f"{'; '.join(errors[:MAX_NAMED_FILES])}{more}. Fix or remove them (or skip them: "
            "--CreateShards-skip-unreadable), then rerun."
        )

    @property
    def to_features(self) -> Any:
        return image_features

    def rows(self) -> dict[str, ImageRows]:
        """(folder, relative path, label, image size) per split, in shuffled order."""
        import numpy as np

        classes = self.classes
        files = [rel for class_files in classes.values() for rel in class_files]  # the listing's strings
        counts = [len(class_files) for class_files in classes.values()]
        labels = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        rs = np.random.RandomState(self.seed)
        picked: dict[str, list[np.ndarray]] = {"train": [], "validation": []}
        start = 0
        for count in counts:  # each class: its files shuffled, the first ones to validation
            order = start + rs.permutation(count)
            n_val = image_folder.num_validation(count, self.validation_fraction)
            picked["validation"].append(order[:n_val])
            picked["train"].append(order[n_val:])
            start += count
        base = os.fspath(self.image_dir)
        rows = {}
        for split, parts in picked.items():  # then each split shuffled as a whole: shards mix the classes
            indices = np.concatenate(parts)
            rows[split] = ImageRows(base, files, labels, indices[rs.permutation(len(indices))], self.image_size)
        return rows

    def split_files(self) -> dict[str, list[tuple[str, int]]]:
        """(relative path, label) per split: stratified per class, then shuffled globally."""
        return {split: [(rel, label) for _, rel, label, _ in rows] for split, rows in self.rows().items()}

    def manifest(self, skipped: dict[str, list[ImageRow]] | None = None) -> dict[str, Any]:
        """Classes, image shape, feature spec, the count of each class in each split (without the
        `skipped` rows, by split) and the files ignored (not images, or not in a class folder)."""
        found = self.folder_listing
        class_names = list(found.classes)
        counts: dict[str, dict[str, int]] = {split: {} for split in ("train", "validation")}
        for name, files in found.classes.items():
            for split, count in split_counts(len(files), self.validation_fraction).items():
                counts[split][name] = count
        for split, rows in (skipped or {}).items():
            for _, _, label, _ in rows:
                counts[split][class_names[label]] -= 1
        return {
            "source": self.kind,
            "image_dir": str(self.image_dir),
            "problem": "classification",
            "class_names": class_names,
            "class_counts": counts,
            "ignored_files": {"count": found.num_ignored, "first": list(found.ignored)},
            "image_shape": [self.image_size, self.image_size, 3],
            "features": {
                "image": {"dtype": "string", "shape": [], "encoding": "png"},
                "label": {"dtype": "int64", "shape": []},
                "shape": {"dtype": "int64", "shape": [3]},
                "path": {"dtype": "string", "shape": []},
            },
            "inputs": "image",
            "label": "label",
            "example_id": "path",
        }


def to_rgb(image: Image.Image) -> Image.Image:
    """The RGB picture an image of any Pillow mode shows.

    16-bit grayscale is scaled to 8 bits (65535 -> 255, rounded; Pillow's own
    conversion clips it, which turns most such images white). Transparency,
    an alpha channel or a palette entry or colour marked transparent, is
    composited on `BACKGROUND`. Palette, bilevel, grayscale and CMYK images
    go through Pillow's conversions.
    """
    import numpy as np
    from PIL import Image

    if image.mode in WIDE_GRAY_MODES:
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(data: bytes, size: int) -> Image.Image:
    """Decode image bytes (a gif: its first frame), upright (EXIF orientation), as RGB (`to_rgb`),
    resized to `size` x `size`.

    Like Keras' image_dataset_from_directory: bilinear, the aspect ratio is
    not kept. Large JPEGs are decoded at a reduced scale first (`draft`).
    """
    from PIL import Image, ImageOps

    opened = Image.open(io.BytesIO(data))
    opened.draft("RGB", (size, size))
    image = to_rgb(ImageOps.exif_transpose(opened))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


def image_features(row: ImageRow) -> tuple[dict[str, Any], dict[str, str]]:
    """The Example features of one image (PNG bytes at the target size, label, shape, relative
    path) and the sha256 of the file; raises `shards.UnreadableRowError` naming a file that is not an image."""
    from PIL import Image

    from pipeline.etl import shards

    base, rel, label, size = row
    path = os.path.join(base, rel)
    try:
        with open(path, "rb") as f:
            data = f.read()
        image = load_image(data, size)
    except Image.UnidentifiedImageError:  # its message names a BytesIO object, not the file
        raise shards.UnreadableRowError(f"{path} (not an image file that Pillow recognises)") from None
    except Exception as e:  # Pillow raises many types for bad data: every one means "unreadable"
        raise shards.UnreadableRowError(f"{path} ({type(e).__name__}: {e})") from None
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    features = {"image": [encoded.getvalue()], "label": [label], "shape": [size, size, 3], "path": [rel.encode()]}
    return features, {rel: hashlib.sha256(data).hexdigest()}
