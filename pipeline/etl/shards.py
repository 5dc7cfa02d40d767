"""Sharded TFRecord files of `tf.train.Example`s, and the manifest beside them.

The writer is plain Python: the `tf.train.Example` protocol buffer and the
TFRecord framing (length, masked CRC32C, data, masked CRC32C) are both small
and fixed formats. Writing them here keeps the ETL stage free of TensorFlow,
so each writer process starts in milliseconds instead of seconds, and the
bytes are deterministic by construction (features are written sorted by
name). TensorFlow reads the files back in `inputs.py`; tests check both ways.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import crc32c
import numpy as np

from pipeline import layout
from pipeline.core import invocation
from pipeline.errors import DataError
from pipeline.runtime import orphans

logger = logging.getLogger("luigi-interface")  # Luigi prints this logger in its run log
MAX_NAMED = 5  # skipped rows named in the run log (the manifest lists them all)

# One feature value: a list of floats, ints or bytes (as tf.train.Feature holds).
FeatureValue = Sequence[float] | Sequence[int] | Sequence[bytes]


# --- protocol buffer encoding of tf.train.Example ------------------------------


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 is encoded as its two's complement, 10 bytes
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value: FeatureValue | np.ndarray) -> bytes:
    # Feature{oneof: bytes_list = 1, float_list = 2, int64_list = 3}; each list
    # holds `repeated value = 1`, packed for floats and ints.
    if isinstance(value, (bytes, bytearray)):
        raise TypeError("A bytes feature must be a list of bytes, e.g. [data].")
    array = np.asarray(value)
    if array.dtype.kind in "SO" or (len(array) and isinstance(value[0], (bytes, bytearray))):
        inner = b"".join(_field(1, bytes(v)) for v in value)  # type: ignore[arg-type]
        return _field(1, inner)
    if array.dtype.kind == "f":
        packed = np.asarray(array, dtype="<f4").tobytes()
        return _field(2, _field(1, packed))
    if array.dtype.kind in "iub":
        packed = b"".join(_varint(int(v)) for v in array.ravel())
        return _field(3, _field(1, packed))
    raise TypeError(f"Unsupported feature dtype. Expected float, int or bytes. Received: dtype={array.dtype}")


def encode_example(features: dict[str, FeatureValue | np.ndarray]) -> bytes:
    """Serialise a `tf.train.Example` whose features are sorted by name."""
    entries = b"".join(
        _field(1, _field(1, name.encode()) + _field(2, _feature(value))) for name, value in sorted(features.items())
    )
    return _field(1, entries)  # Example.features = 1; Features.feature = 1 (map)


# --- TFRecord framing ---------------------------------------------------------------


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c.crc32c(data)
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    return struct.pack("<I", masked)


def frame_record(data: bytes) -> bytes:
    """One TFRecord: uint64 length, its masked CRC32C, the data, its masked CRC32C."""
    length = struct.pack("<Q", len(data))
    return length + _masked_crc(length) + data + _masked_crc(data)


def read_records(path: Path) -> list[bytes]:
    """Read and verify every record of a TFRecord file (for tests and checks)."""
    records = []
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12 or _masked_crc(header[:8]) != header[8:12]:
                raise ValueError(f"Corrupt TFRecord header in {path}.")
            (length,) = struct.unpack("<Q", header[:8])
            data, crc = f.read(length), f.read(4)
            if len(data) != length or _masked_crc(data) != crc:
                raise ValueError(f"Corrupt TFRecord data in {path}.")
            records.append(data)
    return records


# --- writing shards -----------------------------------------------------------------


class UnreadableRowError(ValueError):
    """Raised by a row encoder for an input it cannot read: "<the input> (<the problem>)"."""


# A row encoder: a row -> the features of its Example, and the sha256 of each
# source file it read (relative path -> hex digest; empty if none). Module-level:
# it is sent to the writer processes.
RowEncoder = Callable[[Any], tuple[dict[str, FeatureValue | np.ndarray], dict[str, str]]]


# Rows encoded per job: small enough to spread a shard over every writer process,
# large enough that sending a job costs little beside encoding it.
ROWS_PER_JOB = 64


class EncodedRun(NamedTuple):
    """What a writer process returns for a run of rows."""

    records: list[bytes]  # the framed TFRecords of the readable rows, in order
    sha256: dict[str, str]  # of the source files read
    errors: list[tuple[Any, str]]  # (row, what is wrong with it) of each unreadable row


def _encode_rows(job: tuple[Sequence[Any], RowEncoder]) -> EncodedRun:
    """Encode a run of rows (in a writer process); unreadable rows are reported, not raised."""
    rows, to_features = job
    run = EncodedRun([], {}, [])
    for row in rows:
        try:
            features, sha256 = to_features(row)
        except UnreadableRowError as error:
            run.errors.append((row, str(error)))
            continue
        run.records.append(frame_record(encode_example(features)))
        run.sha256.update(sha256)
    return run


def _in_order(pool: ProcessPoolExecutor | None, jobs: Iterable[Any], ahead: int) -> Iterator[EncodedRun]:
    """`_encode_rows` of each job, in order; at most `ahead` jobs in flight (memory stays bounded)."""
    if pool is None:
        yield from map(_encode_rows, jobs)
        return
    pending: collections.deque[Future[EncodedRun]] = collections.deque()
    for job in jobs:
        pending.append(pool.submit(_encode_rows, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class WrittenSplits(NamedTuple):
    shards: dict[str, list[str]]  # split -> shard paths relative to the folder
    hashed: int  # source files whose sha256 is in layout.SOURCE_SHA256 (0: no such file)
    errors: dict[str, list[tuple[Any, str]]]  # split -> (row, what is wrong) of its unreadable rows


def write_splits(
    folder: Path,
    rows: dict[str, Sequence[Any]],
    num_shards: dict[str, int],
    to_features: RowEncoder,
    processes: int = 1,
    progress: Callable[[float, str], None] | None = None,
    skip_unreadable: bool = False,
) -> WrittenSplits:
    """Write each split's rows (already shuffled) as `num_shards[split]` contiguous shards.

    Each row is read and encoded once. The rows of every split are encoded in
    runs of `ROWS_PER_JOB` by one pool of up to `processes` writer processes,
    whatever the number of shards (3 shards keep 2 processes equally busy);
    this process writes the records to each shard in order, and the sha256
    of each source file read to `layout.SOURCE_SHA256` (JSON lines, in the
    shards' order: streamed, so that a million files cost no memory). Every
    row is encoded even after one turned out unreadable, so that all of them
    can be named; then no shard is kept, unless `skip_unreadable` (the shards
    then hold the readable rows). Files appear under their names only once
    every row was read.
    """
    counts = {split: num_shards[split] for split in rows}
    names = {split: [layout.shard_name(split, i, count) for i in range(count)] for split, count in counts.items()}
    shards: dict[tuple[str, int], list[tuple[int, int]]] = {}  # (split, index) -> its jobs' runs of rows
    for split, split_rows in rows.items():
        bounds = np.linspace(0, len(split_rows), num_shards[split] + 1).astype(int).tolist()
        for i, (start, stop) in enumerate(itertools.pairwise(bounds)):
            shards[split, i] = [(j, min(j + ROWS_PER_JOB, stop)) for j in range(start, stop, ROWS_PER_JOB)]
    # Jobs are made as the pool takes them: a lazy sequence of rows stays lazy.
    jobs = ((rows[split][a:b], to_features) for (split, _), runs in shards.items() for a, b in runs)
    errors: dict[str, list[tuple[Any, str]]] = {split: [] for split in rows}
    folder.mkdir(parents=True, exist_ok=True)
    hashes = folder / (layout.SOURCE_SHA256 + ".tmp")
    temporary = [hashes]
    hashed = 0
    try:
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(process_pool(processes)) if processes > 1 else None
            hash_lines = stack.enter_context(open(hashes, "w"))
            encoded = _in_order(pool, jobs, ahead=4 * processes)
            for done, ((split, i), runs) in enumerate(shards.items(), 1):
                (folder / split).mkdir(parents=True, exist_ok=True)
                tmp = folder / (names[split][i] + ".tmp")
                temporary.append(tmp)
                with open(tmp, "wb") as f:
                    for _ in runs:
                        run = next(encoded)
                        f.writelines(run.records)
                        hash_lines.writelines(
                            json.dumps({"path": rel, "sha256": sha256}) + "\n" for rel, sha256 in run.sha256.items()
                        )
                        hashed += len(run.sha256)
                        errors[split].extend(run.errors)
                    f.flush()
                    os.fsync(f.fileno())
                if progress:
                    progress(done / len(shards), f"{split}: wrote shard {i + 1} of {num_shards[split]}")
        if skip_unreadable or not any(errors.values()):
            for tmp in temporary if hashed else temporary[1:]:  # a source that read no file: no hashes file
                os.replace(tmp, tmp.with_suffix(""))
            temporary = [] if hashed else [hashes]
    finally:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
        for split in rows:
            with contextlib.suppress(OSError):
                (folder / split).rmdir()  # only if empty: nothing kept
    return WrittenSplits(names, hashed, errors)


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    """Worker processes forked from a clean server process rather than from this one.

    This process may already run threads (TensorFlow's, in a test session or in
    a Luigi worker that trained a model before), and a child forked from a
    threaded process can hang on a lock one of those threads held: it happened
    here. The forkserver starts once per process, imports the writers' modules
    (no TensorFlow) and forks each worker from that single-threaded state.
    """
    context = multiprocessing.get_context("forkserver")
    # forkserver_init first: the forkserver then dies with this process.
    context.set_forkserver_preload(["pipeline.etl.forkserver_init", "pipeline.etl.sources"])
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=context, initializer=orphans.die_with_parent)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest (feature spec, counts, shard names) as JSON."""
    with open(folder / layout.MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def read_source_sha256(folder: Path) -> dict[str, str]:
    """The sha256 of every source file the shards in `folder` were made from, by relative path."""
    with open(folder / layout.SOURCE_SHA256) as f:
        return {entry["path"]: entry["sha256"] for entry in map(json.loads, f)}


@invocation.scoped  # a source folder is listed once for the whole ETL (in a stage's run: by its identity)
def create_shards(
    folder: Path,
    source: Any,
    num_shards: dict[str, int],
    processes: int = 1,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Write a source's train and validation splits as shards, then the manifest.

    `source` has `check()` (raises ValueError on a bad source, before any
    work), `rows()` (rows per split, shuffled), `to_features` (its row
    encoder), `manifest()` and, if its encoder can raise `UnreadableRowError`,
    `unreadable(errors, count)` (the message naming them), `skip_unreadable`
    and `manifest(skipped)` (its counts without the rows skipped, by split).
    When a row is unreadable, every one is named in one DataError and no file
    is left in `folder`; if the source skips them they are left out instead,
    and the manifest lists them (`skipped_unreadable`). A split left without
    a readable row is an error either way. Returns the manifest.
    """
    source.check()
    rows = source.rows()
    for split in layout.SPLITS:  # check every split before writing any
        if not 1 <= num_shards[split] <= len(rows[split]):
            raise ValueError(
                f"The {split} split has {len(rows[split])} examples, so it takes 1 to "
                f"{len(rows[split])} shards. Received: num_{split}_shards={num_shards[split]}"
            )
    # Asked before writing: a source whose rows are never unreadable need not say.
    skip_unreadable = bool(getattr(source, "skip_unreadable", False))
    written = write_splits(folder, rows, num_shards, source.to_features, processes, progress, skip_unreadable)
    errors = sorted(message for split_errors in written.errors.values() for _, message in split_errors)
    count = sum(map(len, rows.values()))
    if errors and not skip_unreadable:
        raise DataError(source.unreadable(errors, count))
    for split in layout.SPLITS:
        if len(written.errors[split]) == len(rows[split]):
            raise DataError(f"{source.unreadable(errors, count)} Skipping them leaves the {split} split empty.")
    if errors:
        more = f"; and {len(errors) - MAX_NAMED} more" if len(errors) > MAX_NAMED else ""
        logger.warning(
            "%d unreadable file(s) skipped, listed in the manifest (skipped_unreadable): %s%s",
            len(errors),
            "; ".join(errors[:MAX_NAMED]),
            more,
        )
    skipped = {split: [row for row, _ in split_errors] for split, split_errors in written.errors.items()}
    manifest = dict(source.manifest(skipped) if errors else source.manifest(), splits={})
    if errors:
        manifest["skipped_unreadable"] = errors
    if written.hashed:
        manifest["source_hashes"] = layout.SOURCE_SHA256  # the sha256 of each source file read, one JSON line each
    for split in layout.SPLITS:
        manifest["splits"][split] = {
            "num_examples": len(rows[split]) - len(skipped[split]),
            "shards": written.shards[split],
        }
    write_manifest(folder, manifest)
    return manifest
