"""Output locks (pipeline/runtime/locks.py): one holder at a time, and no lock file left behind."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from pipeline.runtime import locks


def _contend(lock: Path, inside: Path, rounds: int, collisions: multiprocessing.Queue) -> None:
    """Take the lock `rounds` times; each time claim `inside` exclusively, as a holder would its output."""
    clashes = 0
    for _ in range(rounds):
        with locks.exclusive(lock):
            try:
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:  # another process holds the lock too
                clashes += 1
                continue
            os.close(fd)
            time.sleep(0.0005)
            os.unlink(inside)
    collisions.put(clashes)


def test_lock_files_are_removed_and_never_held_twice(tmp_path: Path) -> None:
    # Four processes take one lock 150 times each. Every release removes the lock
    # file while others wait on it: without the holder's check that the path still
    # names the file it locked, a waiter and a newcomer would hold "the" lock at once.
    lock, inside = tmp_path / ".locks" / "models-x.lock", tmp_path / "inside"
    context = multiprocessing.get_context("fork")
    collisions = context.Queue()
    processes = [context.Process(target=_contend, args=(lock, inside, 150, collisions)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    assert [collisions.get(timeout=5) for _ in processes] == [0, 0, 0, 0]
    assert list((tmp_path / ".locks").iterdir()) == []  # every lock file was removed


def test_remove_if_unused_leaves_a_held_lock_alone(tmp_path: Path) -> None:
    lock = tmp_path / "held.lock"
    assert locks.is_held(lock) is False and not lock.exists()  # the probe creates no lock file
    context = multiprocessing.get_context("fork")
    taken, release = context.Event(), context.Event()

    def hold() -> None:
        with locks.exclusive(lock):
            taken.set()
            release.wait(30)

    holder = context.Process(target=hold)
    holder.start()
    try:
        assert taken.wait(30)
        assert locks.is_held(lock) is True
        assert locks.remove_if_unused(lock) is False
        assert lock.exists()  # the holder's lock file is still there
    finally:
        release.set()
        holder.join(30)
    assert not lock.exists()  # the holder removed it on release
    lock.write_text("")  # left by a process that was killed: nobody holds it
    assert locks.is_held(lock) is False
    assert locks.remove_if_unused(lock) is True
    assert not lock.exists()
