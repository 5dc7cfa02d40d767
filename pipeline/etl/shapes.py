"""A synthetic image dataset: geometric shapes as PNG files, one folder per class.

The demo data of the image pipeline, so that it runs on a fresh machine with
no download. Every image is a function of (seed, class name, index) alone:
the same parameters write the same bytes, and asking for more images per
class keeps the first ones. Each shape gets a random colour on a random
background (far enough apart to be seen), a random size, position and
rotation, and Gaussian pixel noise. Drawn 4x larger and downsampled, so the
edges are antialiased as in a photograph.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4
NOISE_STDDEV = 8.0  # pixel noise, in 0-255 units
MIN_COLOUR_DISTANCE = 120.0  # Euclidean RGB distance between shape and background

Points = list[tuple[float, float]]


def _polygon(n: int, rotation: float, radii: Sequence[float] = (1.0,)) -> Points:
    """`n` vertices on the unit circle (radii alternate, for stars), starting at `rotation`."""
    return [
        (radii[k % len(radii)] * math.cos(rotation + 2 * math.pi * k / n),
         radii[k % len(radii)] * math.sin(rotation + 2 * math.pi * k / n))
        for k in range(n)
    ]  # fmt: skip


def _cross(rotation: float) -> Points:
    """A plus sign of arm width 0.4 (of the radius), rotated."""
    w = 0.2
    outline = [
        (w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1),
    ]  # fmt: skip
    c, s = math.cos(rotation), math.sin(rotation)
    return [(x * c - y * s, x * s + y * c) for x, y in outline]


# Unit outlines by class name, given a rotation in radians (None: a circle).
OUTLINES: dict[str, Callable[[float], Points | None]] = {
    "circle": lambda r: None,
    "square": lambda r: _polygon(4, r),
    "triangle": lambda r: _polygon(3, r),
    "star": lambda r: _polygon(10, r, radii=(1.0, 0.45)),
    "cross": _cross,
    "hexagon": lambda r: _polygon(6, r),
}


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    while True:
        background, shape = rng.integers(0, 256, size=(2, 3))
        if np.linalg.norm(background - shape) >= MIN_COLOUR_DISTANCE:
            return tuple(int(v) for v in background), tuple(int(v) for v in shape)


def draw_shape(name: str, size: int, seed: int, index: int) -> np.ndarray:
    """Image `index` of class `name`: uint8 RGB array of shape [size, size, 3]."""
    if name not in OUTLINES:
        raise ValueError(f"Unknown shape. Expected one of {sorted(OUTLINES)}. Received: {name!r}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), index])
    background, colour = _colours(rng)
    big = size * SUPERSAMPLE
    radius = rng.uniform(0.22, 0.42) * big
    cx, cy = rng.uniform(radius + 1, big - radius - 1, size=2)
    rotation = rng.uniform(0, 2 * math.pi)
    canvas = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(canvas)
    outline = OUTLINES[name](rotation)
    if outline is None:
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    else:
        draw.polygon([(cx + radius * x, cy + radius * y) for x, y in outline], fill=colour)
    small = np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    noisy = small + rng.normal(0.0, NOISE_STDDEV, size=small.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def write_shapes(
    folder: Path,
    classes: Sequence[str],
    images_per_class: int,
    image_size: int,
    seed: int,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, int]:
    """Write `folder/<class>/<class>_<index>.png` for every class; return the count per class."""
    unknown = [c for c in classes if c not in OUTLINES]
    if unknown:
        raise ValueError(f"Unknown shapes {unknown}. Expected names from {sorted(OUTLINES)}.")
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            image = Image.fromarray(draw_shape(name, image_size, seed, i))
            image.save(folder / name / f"{name}_{i:04d}.png", format="PNG")
        if progress:
            progress((k + 1) / len(classes), f"wrote {images_per_class} images of class {name}")
    return {name: images_per_class for name in classes}
