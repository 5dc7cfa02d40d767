"""Stage identity: the digest of what decides a stage's output, and how two differ.

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
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.core import modules
from pipeline.core.values import digest, normalise, show


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
        located = modules.find_module(name, roots)
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
