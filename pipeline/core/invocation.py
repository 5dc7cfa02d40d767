"""What one invocation computes once: the listing of each source folder and the identity of each stage.

An invocation is one command, `luigi --module pipeline ...` or `python -m
pipeline status|gc|worker ...`: Luigi's command-line parser is the global
instance for its whole duration (task construction, the checks, the runs), and
the memo here lives as long as it does. Code that builds tasks itself can
open one with `with invocation.scope():`. Outside both, each outermost call
(a task's construction, one `complete()`) has a memo of its own, so code that
edits a folder between two calls sees the edit.

What a memo holds can go out of date while the command runs: MakeShapes
writes the demo images that are CreateShards' source folder, and a run may
wait long for its turn. So a stage's run starts with `forget()` and reads its
inputs as they are then, for its identity and its work alike; and every
publish calls `published()`, which appends a byte to a file under the
artifact root whose size every memo checks before it answers: a stage
published by another process (a worker process, another run sharing the
artifact root) is seen too. Standard library and Luigi only: this runs on the
scheduling path.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from luigi.cmdline_parser import CmdlineParser

# Where the publish log is: `paths.publish_log`, which sets itself here when paths.py is imported (it
# always is: pipeline/__init__.py imports it). Not imported from paths: the ETL's code imports this
# module, and paths (lock folders, caches) must stay out of every stage's code identity.
publish_log: Callable[[], Path] = lambda: Path(os.devnull)  # noqa: E731

T = TypeVar("T")
P = ParamSpec("P")


class _Memo:
    """Computed values, valid while the publish log keeps the size it had when they were computed."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.log = publish_log()
        self.log_size = _size(self.log)

    def current(self) -> dict[Any, Any]:
        size = _size(self.log)
        if size != self.log_size:  # something was published since: computed afresh
            self.values.clear()
            self.log_size = size
        return self.values


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


_local = threading.local()  # an explicit scope, or the outermost call's memo
_command: tuple[Any, _Memo] | None = None  # the command-line parser and its memo


def _active() -> _Memo | None:
    global _command
    memo: _Memo | None = getattr(_local, "memo", None)
    if memo is not None:
        return memo
    parser = CmdlineParser.get_instance()
    if parser is None:
        _command = None  # the command ended: what it listed is let go
        return None
    if _command is None or _command[0] is not parser:
        _command = (parser, _Memo())
    return _command[1]


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Compute each listing and identity once inside this block (nested in an invocation: that one's memo)."""
    if _active() is not None:
        yield
        return
    _local.memo = _Memo()
    try:
        yield
    finally:
        _local.memo = None


def scoped(function: Callable[P, T]) -> Callable[P, T]:
    """`function`, run inside `scope()`: everything it computes, nested calls included, is computed once."""

    @functools.wraps(function)
    def in_scope(*args: P.args, **kwargs: P.kwargs) -> T:
        with scope():
            return function(*args, **kwargs)

    return in_scope


def cached(key: Any, compute: Callable[[], T]) -> T:
    """`compute()` once per invocation for `key` (once per outermost call outside any)."""
    with scope():
        memo = _active()
        assert memo is not None  # scope() made one
        values = memo.current()
        if key not in values:
            values[key] = compute()
        result: T = values[key]
        return result


def forget() -> None:
    """Drop what the current invocation computed: it is computed afresh when next asked for."""
    memo = _active()
    if memo is not None:
        memo.values.clear()


def published(keep: dict[Any, Any] | None = None) -> None:
    """Say that a stage published an output: every invocation sharing the artifact root forgets.

    `keep`: entries of this invocation's memo that the publish did not change
    (the publishing stage's own identity: its output is none of its inputs).
    """
    log = publish_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    # One byte appended (O_APPEND: atomic between processes): the size only grows.
    with open(log, "ab") as f:
        f.write(b".")
    memo = _active()
    if memo is not None:
        memo.values.clear()
        memo.log_size = _size(memo.log)
        memo.values.update(keep or {})
