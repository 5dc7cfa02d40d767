"""Where a module's source file is, found without importing or running it.

For the code closure of a stage (core/identity.py), a user's network builder
(builders.py) and a user's source function (etl/user_source.py). Standard library only: on the scheduling path.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]  # the project's own modules are never a user's
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


def user_roots() -> list[str]:
    """Folders a user's modules (a network, a loss, metrics, callbacks of their own) are found in: the working
    directory first (the project folder too, when `luigi` runs there), then PYTHONPATH's folders."""
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    roots = []
    for root in [os.getcwd(), *extra]:
        root = os.path.abspath(root)
        if root not in roots:
            roots.append(root)
    return roots
