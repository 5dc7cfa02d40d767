"""The layout of a user's image folder: one subfolder per class of PNG or JPEG files.

The layout Keras' `image_dataset_from_directory` reads: `DIR/<class>/<image>`,
class names in sorted order are labels 0, 1, ...; files with other extensions
and hidden files or folders are ignored, as are files directly in `DIR`.
Standard library only: `CreateShards` checks the layout when it is
constructed, on Luigi's scheduling path, before any work is done.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import identity

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def scan(folder: Path) -> dict[str, list[str]]:
    """Class name -> sorted image paths relative to `folder`, for every class subfolder with images.

    Built on `identity.folder_listing`, the listing that goes into the stage's identity.
    """
    classes: dict[str, list[str]] = {}
    for rel in identity.folder_listing(folder):
        name, sep, _ = rel.partition("/")
        if sep and os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
            classes.setdefault(name, []).append(rel)
    return dict(sorted(classes.items()))


def num_validation(count: int, validation_fraction: float) -> int:
    """Images of a class with `count` images that go to validation (rounded half up)."""
    return int(count * validation_fraction + 0.5)


def min_images_per_class(validation_fraction: float) -> int:
    """The fewest images a class needs for at least one on each side of the split."""
    count = 2
    while not 1 <= num_validation(count, validation_fraction) <= count - 1:
        count += 1
    return count


def check_layout(
    folder: Path, validation_fraction: float, flag: str = "--CreateShards-image-dir"
) -> dict[str, list[str]]:
    """Scan `folder` and raise ValueError naming what is wrong: missing, empty, one class, too few images.

    Returns the scan (class name -> relative image paths) when the layout is usable.
    """
    hint = f"Expected {folder}/<class name>/<image>.png (or .jpg), one subfolder per class."
    if not folder.is_dir():
        raise ValueError(f"{flag} {folder} is not a folder. {hint}")
    classes = scan(folder)
    if not classes:
        raise ValueError(f"{flag} {folder} holds no class subfolder with PNG or JPEG images. {hint}")
    if len(classes) == 1:
        (name,) = classes
        raise ValueError(
            f"{flag} {folder} holds a single class ({name!r}); classification needs at least two "
            f"class subfolders. {hint}"
        )
    needed = min_images_per_class(validation_fraction)
    too_few = {name: len(files) for name, files in classes.items() if len(files) < needed}
    if too_few:
        listed = ", ".join(f"{name!r} ({count})" for name, count in too_few.items())
        raise ValueError(
            f"{flag} {folder}: with --CreateShards-validation-fraction {validation_fraction} every class needs "
            f"at least {needed} images (one for validation, the rest for training). Too few images in: {listed}."
        )
    return classes
