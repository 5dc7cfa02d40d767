"""Completion markers: `_SUCCESS.json`, written last into a stage's folder, and what it proves.

The marker records the identity, every output file with its size and sha256
and the content digest they sum to; `check_output` says why a folder is not
(or no longer) the complete output of an identity. Standard library only: on
Luigi's scheduling path.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.identity import Identity, explain_change
from pipeline.core.values import digest

MARKER = "_SUCCESS.json"
MARKER_VERSION = 2  # 2: sealed with `marker_digest`; older markers are not trusted
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Return the sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def list_files(folder: Path) -> list[str]:
    """Relative POSIX paths of every file below `folder` but the marker, sorted."""
    out = []
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(folder).as_posix()
            if rel != MARKER:
                out.append(rel)
    return sorted(out)


def content_digest(files: dict[str, dict[str, Any]], volatile: Sequence[str] = ()) -> str:
    """Digest of what a folder holds for its readers: each file's relative path and content.

    A file's content is its sha256, or what `file_content` recorded for it.
    Files matching a `volatile` pattern (fnmatch, on the relative path) are
    left out: files no reader reads whose bytes differ from run to run.
    """
    return digest(
        {
            rel: rec.get("content", rec["sha256"])
            for rel, rec in sorted(files.items())
            if not any(fnmatch.fnmatchcase(rel, pattern) for pattern in volatile)
        }
    )


# Inside a Keras archive (`model.keras`, a zip): the save date, and ids that are
# memory addresses of the saving process. Neither changes what a reader loads.
_KERAS_VOLATILE_KEYS = {"metadata.json": "date_saved", "config.json": "shared_object_id"}


def keras_archive_content(path: Path) -> str:
    """Digest of a Keras 3 `.keras` archive as a loader sees it: its members' bytes, but for the
    save date in `metadata.json` and the `shared_object_id`s in `config.json` (ids of the saving
    process's objects, renumbered in order of appearance). Two saves of the same model, weights
    and configuration get the same digest; the archive's own bytes differ."""
    import zipfile  # here: the scheduling path that imports this module never reads an archive

    members = {}
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            data = archive.read(name)
            key = _KERAS_VOLATILE_KEYS.get(name)
            if key is not None:
                ids: dict[Any, int] = {}
                data = json.dumps(_without_volatile(json.loads(data), key, ids), sort_keys=True).encode()
            members[name] = hashlib.sha256(data).hexdigest()
    return digest(members)


def _without_volatile(value: Any, key: str, ids: dict[Any, int]) -> Any:
    """A JSON value with `key` dropped ("date_saved") or, for object ids, renumbered 0, 1, ..."""
    if isinstance(value, list):
        return [_without_volatile(v, key, ids) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        if k != key:
            out[k] = _without_volatile(v, key, ids)
        elif key == "shared_object_id":  # which objects are shared still counts, not their addresses
            out[k] = ids.setdefault(v, len(ids))
    return out


def file_content(path: Path, sha256: str) -> str:
    """What a file holds for the stages that read it: its sha256, or for a Keras archive
    `keras_archive_content` (its bytes carry the save date)."""
    if path.suffix != ".keras":
        return sha256
    import zipfile

    try:
        return keras_archive_content(path)
    except (OSError, ValueError, zipfile.BadZipFile):  # not an archive Keras wrote: its bytes are its content
        return sha256


def write_marker(
    folder: Path,
    identity: Identity,
    upstream_content: dict[str, str | None],
    info: dict[str, Any] | None = None,
    volatile: Sequence[str] = (),
) -> dict[str, Any]:
    """Hash every file in `folder` and write `_SUCCESS.json` there, last.

    The marker records the identity, the content digests of the upstream
    outputs consumed, every output file's size, mtime and sha256, and the
    folder's content digest, which the stages below compare: it leaves out
    the `volatile` files (fnmatch patterns) and a Keras archive's save date.
    """
    files: dict[str, dict[str, Any]] = {}
    for rel in list_files(folder):
        path = folder / rel
        st = path.stat()
        sha256 = file_sha256(path)
        files[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
        content = file_content(path, sha256)
        if content != sha256:
            files[rel]["content"] = content
    marker = {
        "marker_version": MARKER_VERSION,
        "identity": identity.digest,
        **identity.as_dict(),
        "upstream_content": dict(sorted(upstream_content.items())),
        "files": files,
        "content_digest": content_digest(files, volatile),
        "content_excludes": list(volatile),
        "created": time.time(),
        "run_id": os.urandom(8).hex(),
        "info": info or {},
    }
    _write_json_atomic(folder / MARKER, seal(marker))
    return marker


def _seal(marker: dict[str, Any]) -> str:
    """Digest of a marker's content but its seal: an edit by hand no longer matches it.

    The marker is JSON data already, and reads back as the same data, so it is
    serialised as it is (no `normalise`): this runs on every up-to-date check.
    """
    content = {key: value for key, value in marker.items() if key != "marker_digest"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(marker: dict[str, Any]) -> dict[str, Any]:
    """Add the marker's digest (written by the stages; by a tool or a test that changed a marker on
    purpose, so that it is trusted); returns it."""
    marker["marker_digest"] = _seal(marker)
    return marker


def marker_problem(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed marker of `folder` and None, or None and why it cannot be trusted.

    Not trusted: missing, not JSON, of another marker version, edited since
    it was written (its seal no longer matches), or listing a file that is not
    a plain relative path inside the folder (`../../etc/passwd`, `/etc/passwd`).
    """
    try:
        with open(folder / MARKER) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None, "no output yet"
    except (OSError, ValueError):
        return None, "marker unreadable"
    if not isinstance(data, dict) or data.get("marker_version") != MARKER_VERSION:
        return None, "marker unreadable (another marker version)"
    try:
        if data.get("marker_digest") != _seal(data):
            return None, f"marker {MARKER} was edited after it was written: not trusted"
        files = data["files"]
        outside = [rel for rel in files if not _plain_relative(rel)] if isinstance(files, dict) else ["(no list)"]
    except (KeyError, TypeError, ValueError):
        return None, "marker unreadable"
    if outside:
        return None, f"marker lists files outside its folder: {', '.join(sorted(outside)[:3])}: not trusted"
    return data, None


def _plain_relative(rel: str) -> bool:
    """A relative POSIX path that stays below its folder: no '..', no absolute path, no empty part."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(part not in ("", ".", "..") for part in parts)


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The parsed marker of `folder`, or None when it is missing, unreadable or not trusted."""
    return marker_problem(folder)[0]


def check_output(folder: Path, identity: Identity, upstream_content: dict[str, str | None] | None) -> list[str]:
    """Why the published output in `folder` is not up to date ([] if it is).

    Every listed file must exist at its recorded size. A file whose mtime
    changed is re-hashed: same bytes (a `touch`) is fine and the new mtime is
    remembered in the marker; other bytes make the output stale. With
    `upstream_content`, the upstream content digests recorded at run time must
    equal these current ones.
    """
    if os.path.islink(folder):
        return [f"output folder {folder} is a symbolic link (to {os.readlink(folder)}): not trusted"]
    marker, problem = marker_problem(folder)
    if marker is None:
        return [problem or "marker unreadable"]
    if marker.get("identity") != identity.digest:
        return ["output belongs to another identity: " + "; ".join(explain_change(marker, identity.as_dict()))]
    reasons: list[str] = []
    touched = False
    inside = os.path.realpath(folder) + os.sep  # a listed file reached through a linked folder is not
    parents: dict[Path, str] = {}
    for rel, rec in marker["files"].items():
        path = folder / rel
        try:
            st = path.lstat()
        except OSError:
            reasons.append(f"output file {rel} is missing")
            continue
        if not stat.S_ISREG(st.st_mode) or not _real_parent(path.parent, parents).startswith(inside):
            reasons.append(f"output file {rel} is not a plain file inside its folder (a link?): not trusted")
        elif st.st_size != rec["size"]:
            reasons.append(f"output file {rel} was altered (size {st.st_size}, recorded {rec['size']})")
        elif st.st_mtime_ns != rec["mtime_ns"]:
            if file_sha256(path) != rec["sha256"]:
                reasons.append(f"output file {rel} was altered (content differs)")
            else:
                rec["mtime_ns"] = st.st_mtime_ns
                touched = True
    if touched and not reasons:
        with contextlib.suppress(OSError):  # a read-only artifact root stays valid
            _write_json_atomic(folder / MARKER, seal(marker))
    if upstream_content is not None:
        # An upstream output that is gone (None) is no change of input: it can
        # be rebuilt; only other published bytes make this output stale.
        recorded = marker.get("upstream_content", {})
        for name, current in sorted(upstream_content.items()):
            if current is not None and recorded.get(name) != current:
                reasons.append(f"upstream {name} output changed since this ran")
    return reasons


def _real_parent(parent: Path, known: dict[Path, str]) -> str:
    """`os.path.realpath(parent) + os.sep`, computed once per folder of a check."""
    if parent not in known:
        known[parent] = os.path.realpath(parent) + os.sep
    return known[parent]


def published_content(folder: Path) -> str | None:
    """The content digest recorded in a published folder's marker, if any."""
    marker = read_marker(folder)
    return None if marker is None else marker.get("content_digest")


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
