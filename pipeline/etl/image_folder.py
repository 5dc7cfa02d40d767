"""The layout of a user's image folder: one subfolder per class of images, at any depth.

The layout Keras' `image_dataset_from_directory` reads: `DIR/<class>/**/<image>`,
images being .bmp, .gif, .jpeg, .jpg and .png files in any letter case; class
names in sorted order are labels 0, 1, ... Other files, and files directly in
`DIR`, are ignored, but never silently: `describe_ignored` says how many, with
a few names (the run log and `python -m pipeline status` print it). Hidden
files and folders do not count. Standard library only: `CreateShards` checks
the layout when it is constructed, on Luigi's scheduling path, before any work
is done, from the folder's one listing (`listing.of`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core import listing

_EXPECTED = ", ".join(sorted(listing.IMAGE_EXTENSIONS))


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
    """List `folder` (once per invocation) and raise ValueError naming what is wrong: missing, empty,
    one class, too few images.

    Returns the classes (class name -> relative image paths) when the layout is usable.
    """
    hint = f"Expected {folder}/<class name>/<image>, one subfolder per class, images being {_EXPECTED} files."
    if not folder.is_dir():
        raise ValueError(f"{flag} {folder} is not a folder. {hint}")
    found = listing.of(folder)
    classes = found.classes
    if not classes:
        ignored = f" ({describe_ignored(found)})" if found.num_ignored else ""
        raise ValueError(f"{flag} {folder} holds no class subfolder with images{ignored}. {hint}")
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


def describe_ignored(found: listing.Listing) -> str | None:
    """One sentence on the files of a folder that are not images of a class, naming a few; None if none."""
    if not found.num_ignored:
        return None
    more = f" and {found.num_ignored - len(found.ignored)} more" if found.num_ignored > len(found.ignored) else ""
    return (
        f"{found.num_ignored} file(s) in {found.folder} are ignored, being no {_EXPECTED} file inside a class "
        f"subfolder: {', '.join(found.ignored)}{more}"
    )
