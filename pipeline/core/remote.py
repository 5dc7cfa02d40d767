"""The remote: published stage folders on object storage, shared by identity (the S3 API through boto3).

Several hosts that share no file system share their work through a bucket,
as a remote build cache does. A published folder is immutable and named by
its identity, so the remote holds it under the same relative path as the
artifact root does:

    <prefix>/<kind path>/<folder>/_SUCCESS.json      the marker, put last, create-only
    <prefix>/<kind path>/<folder>/<run_id>/<file>    the files, under the run that made them

The files of one run sit below its `run_id` (the marker records it): two hosts
publishing the same identity upload beside each other, the first marker put
wins (`If-None-Match: *`) and nothing anyone reads is ever overwritten. A
folder without a marker, or whose marker lists a file the bucket no longer
holds at its size, is not in the remote: a miss, never an error and never a
stale hit. Markers are checked as the local ones are (pipeline.core.markers),
and kept in `<root>/.remote/markers` by their ETag, so an up-to-date check
costs one listing per stage.

Access is boto3's (its client layer botocore, and s3transfer for the files),
configured as users configure S3: the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL), profiles in ~/.aws/config
and ~/.aws/credentials (`endpoint_url` included), so any S3-compatible store
serves. It is imported on first use: a run without a remote never imports it.
Transfers are pipeline/core/transfer.py.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline import paths
from pipeline.core import invocation, markers
from pipeline.errors import ParameterError, PipelineError

NOT_IN_REMOTE = "not in the remote"
MAX_TRANSFERS = 16  # files moved at once (and the connection pool's size)
# A silent endpoint is reported after this, not after botocore's 60 s; a refused one at once.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken", "InvalidToken"}
)


class RemoteError(PipelineError):
    """The remote does not answer, refuses the credentials, or has no such bucket."""


class RemoteUnavailableExit(SystemExit):
    """The remote failed while a run was being scheduled: its line is printed, the run ends (as without luigid)."""


def scheduling_exit(error: RemoteError) -> RemoteUnavailableExit:
    """Print `error` as its one line and make the exit of a run that cannot start: [retcode] unhandled_exception,
    the code of every setting to fix before any work."""
    import luigi.retcodes

    print(f"ERROR: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
    return RemoteUnavailableExit(luigi.retcodes.retcode().unhandled_exception)


class Remote:
    """A bucket and prefix holding published stage folders, for the artifact root `root`."""

    def __init__(self, url: str, root: Path) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
            raise ParameterError(
                "[paths] remote must be s3://bucket/prefix (any S3-compatible store: its endpoint_url comes from "
                f"the AWS configuration, e.g. AWS_ENDPOINT_URL). Received: remote={url!r}"
            )
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.root = root
        self._client: Any = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._checked = False
        self._generations: dict[Path, int] = {}

    # --- the connection ---

    @property
    def client(self) -> Any:
        """The S3 client (made on first use, with the standard AWS configuration)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():  # a worker process forked: its own connections
                # botocore is boto3's client layer, with the same configuration chain; boto3 itself adds
                # resources and an import a tenth of a second long to every up-to-date check.
                import botocore.session
                from botocore.config import Config

                config = Config(
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    retries={"mode": "standard", "total_max_attempts": 3},
                    max_pool_connections=MAX_TRANSFERS + 4,
                )
                try:
                    session = botocore.session.Session()
                    self._client, self._pid = session.create_client("s3", config=config), os.getpid()
                except Exception as error:  # a profile that does not exist, a malformed config file
                    raise RemoteError(
                        f"Cannot configure access to the remote {self.url}: {error}. Fix the AWS configuration "
                        "(AWS_PROFILE, ~/.aws/config) or [paths] remote."
                    ) from None
            return self._client

    @property
    def endpoint(self) -> str:
        """The address requests go to (the configured endpoint_url, or AWS's)."""
        return str(self.client.meta.endpoint_url)

    def require(self) -> None:
        """One request, once: raise RemoteError in one line unless the bucket answers to these credentials."""
        if not self._checked:
            self.call("list", self.client.list_objects_v2, Bucket=self.bucket, Prefix=self.key(""), MaxKeys=1)
            self._checked = True

    def call(self, what: str, function: Callable[..., Any], **arguments: Any) -> Any:
        """`function(**arguments)`, its failure as a RemoteError naming the endpoint and the fix."""
        try:
            return function(**arguments)
        except Exception as error:
            raise self.error(error, what) from None

    def error(self, error: BaseException, what: str) -> BaseException:
        """The one-line RemoteError a botocore failure means (other errors as they are); never a secret."""
        from botocore import exceptions

        where = f"the remote {self.url} at {self.endpoint}"
        if isinstance(error, (exceptions.NoCredentialsError, exceptions.PartialCredentialsError)):
            return RemoteError(
                f"No AWS credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                "naming a profile of ~/.aws/credentials, and run again."
            )
        if isinstance(error, (exceptions.ConnectionError, exceptions.HTTPClientError)):  # refused, timed out, cut
            return RemoteError(
                f"No answer from {where}: start it, or set its address as endpoint_url (AWS_ENDPOINT_URL or the "
                "profile's endpoint_url), then run again; what is published locally is kept."
            )
        if isinstance(error, exceptions.ClientError):
            code = str(error.response.get("Error", {}).get("Code", "?"))
            if code in _CREDENTIAL_CODES:
                return RemoteError(
                    f"{where[0].upper()}{where[1:]} refused the credentials ({code}) to {what}: check "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile AWS_PROFILE names, and run again."
                )
            if code in ("NoSuchBucket", "404"):
                return RemoteError(
                    f"The bucket {self.bucket} does not exist at {self.endpoint}: create it "
                    f"(aws s3 mb s3://{self.bucket}) or fix [paths] remote."
                )
            return RemoteError(f"{where[0].upper()}{where[1:]} answered {code} to {what}.")
        return error

    # --- where a folder is ---

    def key(self, relative: str) -> str:
        """The object key of a path relative to the artifact root."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def folder_key(self, folder: Path) -> str:
        """The key prefix of a stage folder of the artifact root (no trailing slash)."""
        return self.key(folder.relative_to(self.root).as_posix())

    def objects(self, key_prefix: str) -> dict[str, tuple[int, str, float]]:
        """Every object below `key_prefix/`: its key below it -> (size, ETag, last modified)."""
        found: dict[str, tuple[int, str, float]] = {}
        start = len(key_prefix) + 1 if key_prefix else 0
        below = key_prefix + "/" if key_prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=below)
        for page in self.call("list", lambda: list(pages)):
            for item in page.get("Contents", []):
                modified = item.get("LastModified")
                stamp = modified.timestamp() if modified is not None else 0.0
                found[item["Key"][start:]] = (int(item["Size"]), str(item.get("ETag", "")), stamp)
        return found

    def listing(self, folder: Path) -> dict[str, tuple[int, str, float]]:
        """The objects of one stage folder (once per invocation; every publish forgets it)."""
        generation = self._generations.get(folder, 0)
        key = ("remote listing", self.url, folder, generation)
        return invocation.cached(key, lambda: self.objects(self.folder_key(folder)))

    def forget(self, folder: Path) -> None:
        """List `folder` afresh when next asked (it changed in the remote)."""
        self._generations[folder] = self._generations.get(folder, 0) + 1

    def published(self) -> dict[str, dict[str, Any]]:
        """Every whole stage folder in the remote: its path relative to the artifact root -> its marker.

        One listing of the whole prefix; only markers not kept already (by ETag) are read.
        """
        everything = self.objects(self.prefix)
        suffix = "/" + markers.MARKER
        groups: dict[str, dict[str, tuple[int, str, float]]] = {
            key[: -len(suffix)]: {} for key in everything if key.endswith(suffix)
        }
        for key, found in everything.items():
            parts = key.split("/")
            for end in range(1, len(parts)):
                candidate = "/".join(parts[:end])
                if candidate in groups:
                    groups[candidate]["/".join(parts[end:])] = found
                    break
        whole = {}
        for rel, objects in groups.items():
            folder = self.root / rel
            generation = self._generations.get(folder, 0)
            invocation.cached(("remote listing", self.url, folder, generation), functools.partial(dict, objects))
            marker, _ = self.marker(folder)
            if marker is not None and not self.missing_files(folder, marker):
                whole[rel] = marker
        return whole

    # --- markers ---

    def marker_copy(self, folder: Path) -> Path:
        """The folder in `<root>/.remote/markers` that keeps the remote marker of `folder`."""
        return paths.remote_state() / "markers" / folder.relative_to(self.root)

    def marker(self, folder: Path) -> tuple[dict[str, Any] | None, str | None]:
        """The remote marker of `folder` (checked as a local one is) and None, or None and why there is none."""
        found = self.listing(folder).get(markers.MARKER)
        if found is None:
            return None, NOT_IN_REMOTE
        copy = self.marker_copy(folder)
        etag_file = copy / "etag"
        try:
            current = etag_file.read_text() == found[1]
        except OSError:
            current = False
        if not current:
            body = self.get(f"{self.folder_key(folder)}/{markers.MARKER}")
            if body is None:
                return None, NOT_IN_REMOTE
            copy.mkdir(parents=True, exist_ok=True)
            write_atomic(copy / markers.MARKER, body)
            etag_file.write_text(found[1])
        marker, problem = markers.marker_problem(copy)
        return marker, None if marker is not None else f"remote {problem}"

    def get(self, key: str) -> bytes | None:
        """The bytes of one object, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self.error(error, "read " + key) from None
        except Exception as error:
            raise self.error(error, "read " + key) from None
        return body

    def missing_files(self, folder: Path, marker: dict[str, Any]) -> list[str]:
        """Why the files `marker` lists are not all in the remote at their size ([] when they are)."""
        objects = self.listing(folder)
        reasons = []
        for rel, record in marker["files"].items():
            found = objects.get(f"{marker['run_id']}/{rel}")
            if found is None:
                reasons.append(f"remote file {rel} is missing")
            elif found[0] != record["size"]:
                reasons.append(f"remote file {rel} has {found[0]} bytes, its marker says {record['size']}")
        return reasons

    def check(self, folder: Path, digest: str, upstream_content: dict[str, str | None] | None) -> list[str]:
        """Why the remote copy of `folder` is not a complete output of identity `digest` ([] when it is)."""
        marker, problem = self.marker(folder)
        if marker is None:
            return [problem or NOT_IN_REMOTE]
        if marker.get("identity") != digest:
            return ["the remote copy belongs to another identity"]
        reasons = self.missing_files(folder, marker)
        if upstream_content is not None:
            recorded = marker.get("upstream_content", {})
            for name, current in sorted(upstream_content.items()):
                if current is not None and recorded.get(name) != current:
                    reasons.append(f"upstream {name} output changed since the remote copy was made")
        return reasons

    def published_content(self, folder: Path) -> str | None:
        """The content digest of the remote copy of `folder`, when it is whole."""
        marker, _ = self.marker(folder)
        if marker is None or self.missing_files(folder, marker):
            return None
        content = marker.get("content_digest")
        return content if isinstance(content, str) else None

    # --- what this host knows it pushed ---

    def stamp(self, folder: Path) -> Path:
        """The file saying which run of `folder` this remote holds (written after a push or a pull)."""
        return paths.remote_state() / "pushed" / folder.relative_to(self.root)

    def is_pushed(self, folder: Path) -> bool:
        """Whether the remote holds the run of `folder` that is published locally (as far as this host knows)."""
        marker = markers.read_marker(folder)
        try:
            return marker is not None and json.loads(self.stamp(folder).read_text()) == [self.url, marker["run_id"]]
        except (OSError, ValueError):
            return False

    def record_pushed(self, folder: Path, run_id: str) -> None:
        stamp = self.stamp(folder)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(stamp, json.dumps([self.url, run_id]).encode())


def configured() -> Remote | None:
    """The remote `[paths] remote` (or `--paths-remote`) names, or None when it names none (read once per
    invocation: reading Luigi's configuration takes a third of a millisecond, and every check asks)."""
    return invocation.cached(("remote configured",), _configured)


def _configured() -> Remote | None:
    url = paths.paths().remote.strip()
    if not url:
        return None
    # One per configuration: the AWS settings of the environment are part of it (never shown).
    aws = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    return _remote(url, paths.root(), aws)


@functools.lru_cache(maxsize=8)
def _remote(url: str, root: Path, _aws: tuple[tuple[str, str], ...]) -> Remote:
    return Remote(url, root)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers see the old or the new bytes."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
