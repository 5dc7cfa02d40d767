"""Stage identity, completion markers and atomic publishing.

Standard library only: everything here runs on Luigi's scheduling path, where
`complete()` is called on every task of the DAG before anything runs.

A stage's identity is a digest of what decides its output (DESIGN.md): its
significant parameters, the normalised source of the code it runs, the
TensorFlow/Keras versions for stages that train, and its upstream identities.
Its output folder is named by that digest, and it is complete only when the
`_SUCCESS.json` marker written last inside it still describes what is on disk.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import hashlib
import importlib.metadata
import json
import os
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

MARKER = "_SUCCESS.json"
MARKER_VERSION = 2  # 2: sealed with `marker_digest`; older markers are not trusted
_CHUNK = 1 << 20


# --- normalisation and digests ------------------------------------------------


def normalise(value: Any) -> Any:
    """Return `value` as plain JSON data with one spelling per value.

    Numbers are compared as numbers (JSON writes a float as its shortest
    round-trip form, so `0.01` and `1e-2` are the same parameter), tuples
    become lists and mappings are sorted by key.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): normalise(v) for k, v in sorted(value.items())}
    return str(value)


def digest(data: Any) -> str:
    """Return the sha256 hex digest of `data` serialised as canonical JSON."""
    text = json.dumps(normalise(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """Return the sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_digest(source: str, class_name: str | None = None) -> str:
    """Digest Python source so that only what it computes counts.

    The source is parsed and dumped without positions, so comments, blank
    lines and formatting do not count; docstrings are dropped too. With
    `class_name`, only that class definition of the module is digested.
    """
    tree: ast.AST = _strip_docstrings(ast.parse(source))
    if class_name is not None:
        found = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name]
        if not found:
            raise ValueError(f"No class {class_name!r} in the source given to code_digest().")
        tree = found[0]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


# Code digests by (sha256 of the file's bytes, class name), kept beside the
# bytecode in the package's __pycache__: parsing and dumping the modules is
# most of an up-to-date check's own time, hashing their bytes is nothing.
CODE_DIGEST_CACHE = Path(__file__).parent / "__pycache__" / "code_digests.json"
_CODE_CACHE_ENTRIES = 2000  # the newest are kept: a few hundred code versions
_code_cache: dict[str, str] | None = None


def _load_code_cache() -> dict[str, str]:
    global _code_cache
    if _code_cache is None:
        try:
            loaded = json.loads(CODE_DIGEST_CACHE.read_text())
            _code_cache = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        except (OSError, ValueError):  # none yet, or unreadable: computed afresh
            _code_cache = {}
    return _code_cache


def file_code_digest(path: Path, class_name: str | None = None) -> str:
    """`code_digest` of a file (or of one class in it), cached on the sha256 of its bytes."""
    data = path.read_bytes()
    key = f"{hashlib.sha256(data).hexdigest()}:{class_name or ''}"
    cache = _load_code_cache()
    if key not in cache:
        cache[key] = code_digest(data.decode(), class_name)
        _save_code_cache(cache)
    return cache[key]


def _save_code_cache(cache: dict[str, str]) -> None:
    for old in list(cache)[: max(0, len(cache) - _CODE_CACHE_ENTRIES)]:
        del cache[old]
    with contextlib.suppress(OSError):  # a read-only install: the cache only saves time
        CODE_DIGEST_CACHE.parent.mkdir(exist_ok=True)
        tmp = CODE_DIGEST_CACHE.with_name(f"{CODE_DIGEST_CACHE.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, CODE_DIGEST_CACHE)


# --- code closure: the modules a stage's code imports ----------------------------


def _import_names(tree: ast.AST) -> list[list[Any]]:
    """[module, level, [names]] of every import statement in a module, at any depth."""
    found: list[list[Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [[alias.name, 0, []] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append([node.module or "", node.level, [alias.name for alias in node.names]])
    return found


def _file_imports(path: Path) -> list[list[Any]]:
    """`_import_names` of a file, cached on the sha256 of its bytes like its code digest."""
    data = path.read_bytes()
    key = f"{hashlib.sha256(data).hexdigest()}:imports"
    cache = _load_code_cache()
    if key not in cache:
        cache[key] = json.dumps(_import_names(ast.parse(data)))
        _save_code_cache(cache)
    result: list[list[Any]] = json.loads(cache[key])
    return result


_found_modules: dict[tuple[str, tuple[str, ...]], tuple[Path, bool]] = {}  # where modules were found, this process


def find_module(name: str, roots: list[str]) -> tuple[Path, bool] | None:
    """`_find_module`, remembering where each module was found (a module not found is looked for again)."""
    key = (name, tuple(roots))
    if key not in _found_modules:
        found = _find_module(name, roots)
        if found is None:
            return None
        _found_modules[key] = found
    return _found_modules[key]


def _find_module(name: str, roots: list[str]) -> tuple[Path, bool] | None:
    """The source file of module `name` below one of `roots`, and whether it is a package; None if not there.

    Nothing is imported or executed: packages are followed by their folders.
    Modules found elsewhere (the standard library, installed packages) are not
    ours: their versions are recorded instead.
    """
    from importlib.machinery import PathFinder

    search: list[str] | None = roots
    spec = None
    parts = name.split(".")
    for depth in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: depth + 1]), search)
        if spec is None or spec.origin in (None, "built-in", "frozen"):
            return None
        search = list(spec.submodule_search_locations or [])
        if depth < len(parts) - 1 and not search:
            return None
    assert spec is not None and spec.origin is not None
    if not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin), bool(spec.submodule_search_locations)


# Packages whose __init__.py only loads other code (the Luigi tasks): importing a
# submodule of them does not make the stage depend on everything they load.
LOADER_PACKAGES = frozenset({"pipeline"})


def code_closure(entries: list[str], roots: list[str]) -> dict[str, Path]:
    """Every module of `roots` that the `entries` import, transitively, from the AST: label -> file.

    A label is the file's path relative to the root it lies in
    (`pipeline/paths.py`, `my_models.py`). Imports anywhere in a module count
    (inside functions too: they run when the stage runs). `from pipeline
    import paths` counts the module `pipeline/paths.py`, not the package's
    `__init__.py`, which only loads the tasks.
    """
    roots = [os.path.abspath(root) for root in roots]
    found: dict[str, Path] = {}
    pending = list(entries)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        located = find_module(name, roots)
        if located is None:
            continue
        path, is_package = located
        if is_package and name not in entries and name in LOADER_PACKAGES:
            continue  # imported for a submodule of it
        root = next(r for r in roots if os.fspath(path).startswith(r + os.sep))
        found[os.path.relpath(path, root).replace(os.sep, "/")] = path
        package = name if is_package else name.rpartition(".")[0]
        for module, level, names in _file_imports(path):
            if level:  # relative: from . import x, from ..a import b
                base = package.rsplit(".", level - 1)[0] if level > 1 else package
                module = f"{base}.{module}" if module else base
            pending.append(module)
            pending += [f"{module}.{n}" for n in names if n != "*"]  # `from pkg import mod` imports pkg.mod
    return dict(sorted(found.items()))


def file_stat(path: Path) -> list[int]:
    """[size, mtime_ns] of a user's source file ([] when it is missing): what its identity holds."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    return [st.st_size, st.st_mtime_ns]


@cache
def framework_versions() -> dict[str, str]:
    """TensorFlow and Keras major.minor, read from package metadata (no import)."""
    versions = {}
    for name, dists in (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",))):
        for dist in dists:
            try:
                versions[name] = ".".join(importlib.metadata.version(dist).split(".")[:2])
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            versions[name] = "missing"
    return versions


# --- identity -------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Everything that decides a stage's output, and its digest."""

    stage: str
    params: dict[str, Any]
    code: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # folder name -> digest of its listing

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "params": normalise(self.params),
            "code": dict(sorted(self.code.items())),
            "versions": dict(sorted(self.versions.items())),
            "upstream": dict(sorted(self.upstream.items())),
            "sources": dict(sorted(self.sources.items())),
        }

    @property
    def digest(self) -> str:
        return digest(self.as_dict())

    @property
    def short(self) -> str:
        """The first 12 hex digits: what output folder names carry."""
        return self.digest[:12]


def explain_change(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Say in words how two identity dicts (`Identity.as_dict()`) differ."""
    reasons: list[str] = []
    for part, say in (
        ("params", "parameter {name} changed from {old} to {new}"),
        ("code", "code in {name} changed"),
        ("versions", "{name} version changed from {old} to {new}"),
        ("upstream", "upstream stage {name} changed"),
        ("sources", "source folder {name} changed (files added, removed or modified)"),
    ):
        before, after = old.get(part, {}), new.get(part, {})
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                reasons.append(say.format(name=name, old=show(before.get(name)), new=show(after.get(name))))
    return reasons


def show(value: Any) -> str:
    """A parameter's value as the explanations of a change write it (status, gc, diff)."""
    return "(unset)" if value is None else json.dumps(value)


# --- markers ----------------------------------------------------------------------


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


# --- publishing -------------------------------------------------------------------


def staging_path(final: Path) -> Path:
    """The staging folder beside `final` (a crashed run leaves it there)."""
    return final.with_name(final.name + ".partial")


def publish(staging: Path, final: Path) -> None:
    """Move a fully written staging folder into place with one atomic rename.

    An older folder of the same identity is moved aside first and removed
    after, so at every instant `final` is either the old or the new output.
    """
    if read_marker(staging) is None:
        raise RuntimeError(f"Refusing to publish {staging}: it has no valid {MARKER}.")
    aside = None
    if os.path.lexists(final):  # also a link, even a broken one: the link is moved, never its target
        aside = final.with_name(f"{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(final, aside)
    os.rename(staging, final)
    _fsync_dir(final.parent)
    if aside is not None:
        if os.path.islink(aside):
            os.unlink(aside)
        else:
            shutil.rmtree(aside, ignore_errors=True)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
