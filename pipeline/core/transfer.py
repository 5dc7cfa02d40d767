"""Moving published stage folders between the local root and the remote (pipeline/core/remote.py).

Push: the folder's files in parallel, below its run's id; then the marker, last,
with a put that only creates (`If-None-Match: *`). Files already in the remote
at their size (a push that was cut off) are not sent again. Of two hosts
pushing the same identity, the first marker wins; the second host then pulls
the winner's folder in place of its own, so that every host reads the same
bytes below it. A remote copy whose marker lists files the bucket lost is
replaced (its marker removed, ours put create-only).

Pull: every file in parallel into a folder beside the final one, each checked
against the sha256 its marker records; a file that does not match is refused,
named in a warning, and pulled again once. Each file gets the mtime the marker
records, so the local check is the cheap one. Then one atomic rename, as a
publish. A pulled folder is a cached copy (pipeline/core/pulled.py).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.core import markers, publish, pulled
from pipeline.core.identity import Identity
from pipeline.core.remote import MAX_TRANSFERS, Remote, RemoteError
from pipeline.errors import DataError
from pipeline.runtime import locks

logger = logging.getLogger("luigi-interface")

PUSHED, ALREADY, ADOPTED = "pushed", "already in the remote", "another host's copy adopted"
KEPT = "the remote keeps another host's copy; the local one stays"


def _transfer(remote: Remote, jobs: Mapping[str, Callable[[Any], Any]]) -> None:
    """Run transfer jobs (each given s3transfer's TransferManager, returning its future) MAX_TRANSFERS
    at once over one pool of connections; a failure is raised as the remote's one-line error."""
    from s3transfer.manager import TransferConfig, TransferManager

    # Files above 16 MB go in 16 MB parts, in parallel too (the same pool of requests).
    config = TransferConfig(
        multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_request_concurrency=MAX_TRANSFERS
    )
    with TransferManager(remote.client, config) as manager:
        futures = {name: job(manager) for name, job in jobs.items()}
        for name, future in futures.items():
            remote.call("transfer " + name, future.result)


def push(remote: Remote, folder: Path, adopt: bool = True) -> str:
    """Upload the published `folder` to the remote, the marker last and create-only.

    Returns PUSHED, ALREADY (the remote held this very run) or ADOPTED (another
    host's run of the same identity was there first: it replaced the local
    folder; with `adopt` False, a forced rebuild, the local one stays and
    KEPT is returned). Raises RemoteError when the remote cannot be reached.
    """
    marker = markers.read_marker(folder)
    if marker is None:
        raise RuntimeError(f"Refusing to push {folder}: it has no valid {markers.MARKER}.")
    run_id = marker["run_id"]
    existing, _ = remote.marker(folder)
    if existing is not None and not remote.missing_files(folder, existing):
        if existing["run_id"] == run_id:
            remote.record_pushed(folder, run_id)
            return ALREADY
        return _adopt(remote, folder, existing, adopt)
    base = remote.folder_key(folder)
    objects = remote.listing(folder)
    todo = [
        rel for rel, record in marker["files"].items() if objects.get(f"{run_id}/{rel}", (-1, ""))[0] != record["size"]
    ]
    _transfer(
        remote,
        {
            rel: functools.partial(_upload, path=str(folder / rel), bucket=remote.bucket, key=f"{base}/{run_id}/{rel}")
            for rel in todo
        },
    )
    body = (folder / markers.MARKER).read_bytes()
    # A marker with no whole copy behind it (files lost, or the marker itself damaged): it goes, ours is put
    # create-only.
    if markers.MARKER in objects:
        logger.warning("The remote copy of %s is damaged; replacing it with this host's", folder.name)
        remote.call(
            "remove a damaged marker", remote.client.delete_object, Bucket=remote.bucket, Key=f"{base}/{markers.MARKER}"
        )
    if not _put_if_absent(remote, f"{base}/{markers.MARKER}", body):
        remote.forget(folder)
        winner, _ = remote.marker(folder)
        if winner is None:  # removed again meanwhile: nothing to adopt, nothing published
            raise RemoteError(f"The remote copy of {folder.name} changed while this host pushed it: run again.")
        return _adopt(remote, folder, winner, adopt)
    remote.forget(folder)
    remote.record_pushed(folder, run_id)
    return PUSHED


def _upload(manager: Any, path: str, bucket: str, key: str) -> Any:
    return manager.upload(path, bucket, key)


def _download(manager: Any, writer: _HashingWriter, bucket: str, key: str) -> Any:
    return manager.download(bucket, key, writer)


class _HashingWriter(io.RawIOBase):
    """A file that hashes what is written to it. Not seekable, so s3transfer writes it in order (the parts of
    a large file too): a pulled file is hashed as it arrives, not read again."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.file = open(path, "wb")  # noqa: SIM115 (closed by close(), after the transfer)
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()
        super().close()


def _put_if_absent(remote: Remote, key: str, body: bytes) -> bool:
    """Put `body` at `key` unless an object is there (If-None-Match: *): whether this put created it."""
    from botocore.exceptions import ClientError

    try:
        remote.client.put_object(
            Bucket=remote.bucket, Key=key, Body=body, IfNoneMatch="*", ContentType="application/json"
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return False
        raise remote.error(error, "put the marker") from None
    except Exception as error:
        raise remote.error(error, "put the marker") from None
    return True


def _adopt(remote: Remote, folder: Path, winner: dict[str, Any], adopt: bool) -> str:
    if not adopt:
        logger.warning(
            "%s: the remote keeps the first publication of this identity (run %s); this host keeps its own",
            folder.name,
            winner["run_id"],
        )
        return KEPT
    logger.info("%s: another host published it first (run %s); pulling its copy", folder.name, winner["run_id"])
    pull(remote, folder)
    return ADOPTED


def pull_if_needed(remote: Remote, folder: Path, identity: Identity | None = None) -> bool:
    """Pull the remote copy of `folder` unless a whole output of `identity` (default: the remote
    marker's) is here; whether it pulled. Holds the folder's lock meanwhile: two stages of this host
    pull it once."""
    with locks.exclusive(paths.lock_path(folder)):
        if identity is None:
            marker, problem = remote.marker(folder)
            if marker is None:
                raise DataError(f"{folder.name} cannot be pulled: {problem}.")
            identity = Identity(**{name: marker[name] for name in Identity.__dataclass_fields__})
        if not markers.check_output(folder, identity, None):
            return False
        pull(remote, folder)
        return True


def pull(remote: Remote, folder: Path) -> None:
    """Download the remote copy of `folder` into the local root, each file checked by its sha256.

    The caller holds the folder's lock (or knows no one else writes it).
    Raises DataError naming a file that still does not match its sha256 when
    pulled a second time, RemoteError when the remote cannot be reached.
    """
    marker, problem = remote.marker(folder)
    if marker is None:
        raise DataError(f"{folder.name} cannot be pulled: {problem}. Run the stage again to rebuild it.")
    reasons = remote.missing_files(folder, marker)
    if reasons:
        raise DataError(f"{folder.name} cannot be pulled: {'; '.join(reasons)}. Run the stage again to rebuild it.")
    base = f"{remote.folder_key(folder)}/{marker['run_id']}"
    staging = folder.with_name(f"{folder.name}.pull-{os.getpid()}-{time.time_ns()}")
    started = time.monotonic()
    files: dict[str, dict[str, Any]] = marker["files"]

    def fetch(names: list[str]) -> list[str]:
        """Download `names` into the staging folder, hashing as they arrive; those whose sha256 is not the
        marker's."""
        writers = {}
        try:
            for rel in names:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                writers[rel] = _HashingWriter(staging / rel)
            jobs = {
                rel: functools.partial(_download, writer=writers[rel], bucket=remote.bucket, key=f"{base}/{rel}")
                for rel in names
            }
            _transfer(remote, jobs)
        finally:
            for writer in writers.values():
                writer.close()
        return [rel for rel in names if writers[rel].sha256.hexdigest() != files[rel]["sha256"]]

    def download_checked() -> None:
        refused = fetch(list(files))
        for rel in refused:
            logger.warning(
                "Refused s3://%s/%s/%s: its sha256 differs from its marker's; pulling it again",
                remote.bucket,
                base,
                rel,
            )
        for rel in fetch(refused) if refused else []:
            raise DataError(
                f"Refused s3://{remote.bucket}/{base}/{rel}: its sha256 differs from the one its marker records, "
                f"twice. The remote copy of {folder.name} is damaged: remove it (aws s3 rm --recursive "
                f"s3://{remote.bucket}/{remote.folder_key(folder)}/), then run again to rebuild it."
            )
        for rel, record in files.items():
            os.utime(staging / rel, ns=(record["mtime_ns"], record["mtime_ns"]))

    try:
        staging.mkdir(parents=True)
        download_checked()
        shutil.copyfile(remote.marker_copy(folder) / markers.MARKER, staging / markers.MARKER)
        publish.publish(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    remote.record_pushed(folder, marker["run_id"])
    size = sum(int(record["size"]) for record in marker["files"].values())
    pulled.record(folder, marker["run_id"], size)
    logger.info(
        "Pulled %s from %s (%d files, %.1f MB, %.1f s)",
        folder.name,
        remote.url,
        len(marker["files"]),
        size / 1e6,
        time.monotonic() - started,
    )
