"""Sharded TFRecord files of `tf.train.Example`s, and the manifest beside them.

The writer is plain Python: the `tf.train.Example` protocol buffer and the
TFRecord framing (length, masked CRC32C, data, masked CRC32C) are both small
and fixed formats. Writing them here keeps the ETL stage free of TensorFlow,
so each writer process starts in milliseconds instead of seconds, and the
bytes are deterministic by construction (features are written sorted by
name). TensorFlow reads the files back in `inputs.py`; tests check both ways.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import crc32c
import numpy as np

from pipeline import paths

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

RowEncoder = Callable[[Any], dict[str, FeatureValue | np.ndarray]]


def _die_with_parent() -> None:
    """Make a writer process end when its parent dies (Linux), e.g. when the stage is SIGKILLed.

    Its parent is the forkserver, which exits as soon as the stage process is gone.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _write_shard(job: tuple[Path, Sequence[Any], RowEncoder]) -> tuple[str, int]:
    path, rows, to_features = job
    tmp = path.with_name(path.name + ".tmp")
    size = 0
    with open(tmp, "wb") as f:
        for row in rows:
            record = frame_record(encode_example(to_features(row)))
            f.write(record)
            size += len(record)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path.name, size


def write_split(
    folder: Path,
    split: str,
    rows: Sequence[Any],
    num_shards: int,
    to_features: RowEncoder,
    processes: int = 1,
    on_shard_done: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Write `rows` (already shuffled) as `num_shards` contiguous shards.

    One job per shard, run by up to `processes` writer processes;
    `to_features` turns a row into the feature dict of its Example and must be
    a module-level function (it is sent to the writers). Returns the shard
    paths relative to `folder`.
    """
    if not 1 <= num_shards <= len(rows):
        raise ValueError(
            f"The {split} split has {len(rows)} examples, so it takes 1 to {len(rows)} shards. "
            f"Received: num_{split}_shards={num_shards}"
        )
    bounds = np.linspace(0, len(rows), num_shards + 1).astype(int)
    names = [paths.shard_name(split, i, num_shards) for i in range(num_shards)]
    (folder / split).mkdir(parents=True, exist_ok=True)
    jobs = [(folder / names[i], rows[bounds[i] : bounds[i + 1]], to_features) for i in range(num_shards)]
    if processes <= 1 or num_shards == 1:
        for done, job in enumerate(jobs, 1):
            _write_shard(job)
            if on_shard_done:
                on_shard_done(done, num_shards)
    else:
        with process_pool(min(processes, num_shards)) as pool:
            for done, _ in enumerate(pool.map(_write_shard, jobs), 1):
                if on_shard_done:
                    on_shard_done(done, num_shards)
    return names


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    """Worker processes forked from a clean server process rather than from this one.

    This process may already run threads (TensorFlow's, in a test session or in
    a Luigi worker that trained a model before), and a child forked from a
    threaded process can hang on a lock one of those threads held: it happened
    here. The forkserver starts once per process, imports the writers' modules
    (no TensorFlow) and forks each worker from that single-threaded state.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pipeline.sources"])
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=context, initializer=_die_with_parent)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest (feature spec, counts, shard names) as JSON."""
    with open(folder / paths.MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a shards folder."""
    with open(folder / paths.MANIFEST) as f:
        data: dict[str, Any] = json.load(f)
    return data


def create_shards(
    folder: Path,
    source: Any,
    num_shards: dict[str, int],
    processes: int = 1,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Write a source's train and validation splits as shards, then the manifest.

    `source` has `rows()` (rows per split, shuffled), `check(processes)`
    (raises ValueError naming every bad input; returns facts for the
    manifest), `to_features` (a module-level row encoder) and `manifest()`.
    Nothing is written before every check has passed. Returns the manifest.
    """
    rows = source.rows()
    for split in paths.SPLITS:  # check every split before writing any
        if not 1 <= num_shards[split] <= len(rows[split]):
            raise ValueError(
                f"The {split} split has {len(rows[split])} examples, so it takes 1 to "
                f"{len(rows[split])} shards. Received: num_{split}_shards={num_shards[split]}"
            )
    if progress:
        progress(0.0, "checking the source")
    facts = source.check(processes)
    total = sum(num_shards.values())
    done_before = 0
    manifest = dict(source.manifest(), **facts, splits={})
    for split in paths.SPLITS:

        def report(done: int, count: int, split: str = split, offset: int = done_before) -> None:
            if progress:
                progress((offset + done) / total, f"{split}: wrote shard {done} of {count}")

        names = write_split(folder, split, rows[split], num_shards[split], source.to_features, processes, report)
        manifest["splits"][split] = {"num_examples": len(rows[split]), "shards": names}
        done_before += num_shards[split]
    write_manifest(folder, manifest)
    return manifest
