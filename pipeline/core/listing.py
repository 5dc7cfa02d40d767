"""One pass over a source folder: the digest of its listing, and its images by class.

A folder of user files (images) joins a stage's identity through its listing:
the relative path, size and mtime of every file (content hashes are recorded
in the manifest, not recomputed on every check). At a million files that pass
is the whole cost of an up-to-date check, so it does everything at once: each
file is stat'ed once and streamed into the digest (nothing the size of the
folder is built and serialised), and sorted on the way into the layout Keras'
`image_dataset_from_directory` reads, `DIR/<class>/**/<image>`. It is made
once per invocation (`of`, through `invocation.cached`) and shared by the
parameter checks, the identity, `complete()`, `status` and the ETL.

Hidden files and folders (".DS_Store", ".git") do not count; symbolic links are
followed (a folder reached twice is listed once); broken ones are skipped.
Standard library only: this runs on Luigi's scheduling path.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import invocation

# What Keras' image_dataset_from_directory reads (its ALLOWLIST_FORMATS), in any letter case.
IMAGE_EXTENSIONS = frozenset((".bmp", ".gif", ".jpeg", ".jpg", ".png"))
MAX_NAMED = 5  # ignored files named (of however many)


@dataclass(frozen=True)
class Listing:
    """What one pass over a source folder found."""

    folder: Path
    digest: str  # sha256 of every file's relative path, size and mtime, in the pass's order
    num_files: int  # every file (hidden ones aside)
    # Class (a top-level subfolder holding images) -> its image files at any depth, relative to
    # `folder`: each folder's files by name, then its subfolders by name. Classes by name.
    classes: dict[str, list[str]]
    num_ignored: int  # files that are not images inside a class folder: other extensions, or top-level files
    ignored: tuple[str, ...]  # the first MAX_NAMED of them, relative to `folder`

    @property
    def num_images(self) -> int:
        return sum(map(len, self.classes.values()))


def of(folder: Path) -> Listing:
    """The listing of `folder`, made once per invocation (see `pipeline.invocation`)."""
    return invocation.cached(("listing", os.path.abspath(folder)), lambda: scan(folder))


def scan(folder: Path) -> Listing:
    """List `folder` now: one stat per file, streamed into the digest, images sorted by class on the way.

    A folder that does not exist (yet: MakeShapes writes the demo's) lists as
    empty. The digest hashes one record per file, `<relative path>\\0<size>
    <mtime_ns>\\0`, in a fixed order (each folder's files by name, then its
    subfolders by name, depth first): no file name holds a NUL, so two
    different listings never hash the same records.
    """
    digest = hashlib.sha256()
    classes: dict[str, list[str]] = {}
    ignored: list[str] = []
    num_files = num_ignored = 0
    try:
        top = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):  # not there (yet): lists as empty, as os.walk would
        top = None
    seen = {(top.st_dev, top.st_ino)} if top else set()
    # Folders still to visit: (path, relative prefix, the image list of its class; None at the top).
    pending: list[tuple[str, str, list[str] | None]] = [(os.fspath(folder), "", None)] if top else []
    while pending:
        path, prefix, images = pending.pop()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):  # removed meanwhile
            continue
        try:
            # Names, then one stat each relative to the folder's descriptor (fstatat): no DirEntry
            # objects and no lookup of the whole path per file, a third cheaper than os.scandir.
            names = sorted(os.listdir(fd))
            records: list[str] = []
            subfolders: list[tuple[str, str, list[str] | None]] = []
            for name in names:
                if name[0] == ".":
                    continue
                try:
                    st = os.stat(name, dir_fd=fd)  # symbolic links followed
                except FileNotFoundError:  # a broken link, or removed meanwhile
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) not in seen:  # a folder reached twice (a link) is listed once
                        seen.add((st.st_dev, st.st_ino))
                        files = classes.setdefault(name, []) if images is None else images
                        subfolders.append((os.path.join(path, name), f"{prefix}{name}/", files))
                    continue
                rel = prefix + name
                records.append(f"{rel}\0{st.st_size} {st.st_mtime_ns}\0")
                if images is not None and name[name.rfind(".") :].lower() in IMAGE_EXTENSIONS:
                    images.append(rel)
                else:
                    num_ignored += 1
                    if len(ignored) < MAX_NAMED:
                        ignored.append(rel)
        finally:
            os.close(fd)
        digest.update("".join(records).encode("utf-8", "surrogateescape"))
        num_files += len(records)
        pending.extend(reversed(subfolders))  # popped in name order
    return Listing(
        folder=Path(folder),
        digest=digest.hexdigest(),
        num_files=num_files,
        classes={name: files for name, files in sorted(classes.items()) if files},
        num_ignored=num_ignored,
        ignored=tuple(ignored),
    )
