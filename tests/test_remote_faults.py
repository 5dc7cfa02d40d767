"""The remote when things go wrong, against a real S3 server (SeaweedFS): a push cut off by the
server's death, a server nobody runs, damaged remote objects, bad credentials, two hosts racing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pipeline.core import markers, transfer
from pipeline.core.identity import Identity
from pipeline.core.remote import NOT_IN_REMOTE, Remote, RemoteError
from pipeline.errors import DataError
from tests.conftest import Config
from tests.scheduler import free_port
from tests.seaweed import BUCKET, VENV_BIN, SeaweedFS, host_folder, run, running_seaweedfs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with running_seaweedfs(tmp_path_factory.mktemp("s3")) as started:
        yield started


@pytest.fixture
def aws(server: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> SeaweedFS:
    """This process reaches `server` through the environment."""
    for key in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in server.env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    return server


def _folder(root: Path, name: str, files: dict[str, bytes]) -> Path:
    """A published stage folder of made-up files, with a real marker."""
    folder = root / "models" / name
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    markers.write_marker(folder, Identity(stage="Made", params={"name": name}, code={}), {})
    return folder


def test_a_push_cut_off_by_the_server_is_never_complete_and_the_next_push_completes_it(
    aws: SeaweedFS, workspace: Path, config: Config
) -> None:
    folder = _folder(workspace, "cut-0123456789ab", {f"part-{i:02d}.bin": os.urandom(50_000) for i in range(24)})
    store = Remote(f"s3://{BUCKET}/cut", workspace)
    uploaded = []
    put_object = store.client.put_object

    def put_then_crash(**arguments: object) -> object:  # the server dies after the 5th file
        answer = put_object(**arguments)
        uploaded.append(arguments["Key"])
        if len(uploaded) == 5:
            aws.stop(kill=True)
        return answer

    store.client.put_object = put_then_crash
    try:
        with pytest.raises(RemoteError, match=f"No answer from the remote s3://{BUCKET}/cut at {aws.endpoint}"):
            transfer.push(store, folder)
    finally:
        aws.start()
    marker = markers.read_marker(folder)
    assert marker is not None
    held = aws.objects("cut/")
    assert 5 <= len(held) < 24 and not any(key.endswith(markers.MARKER) for key in held)
    other_host = Remote(f"s3://{BUCKET}/cut", workspace)  # what any host sees now: a miss
    assert other_host.check(folder, marker["identity"], None) == [NOT_IN_REMOTE]

    assert transfer.push(Remote(f"s3://{BUCKET}/cut", workspace), folder) == transfer.PUSHED
    fresh = Remote(f"s3://{BUCKET}/cut", workspace)
    assert fresh.check(folder, marker["identity"], None) == []
    assert len(aws.objects("cut/")) == 25  # 24 files, each once, and the marker


def test_an_altered_remote_file_is_refused_by_its_sha256_and_pulled_again_once(
    aws: SeaweedFS, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(workspace, "alt-0123456789ab", {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000})
    store = Remote(f"s3://{BUCKET}/alt", workspace)
    assert transfer.push(store, folder) == transfer.PUSHED
    marker = markers.read_marker(folder)
    assert marker is not None
    key = f"alt/models/{folder.name}/{marker['run_id']}/b.bin"
    aws.client().put_object(Bucket=BUCKET, Key=key, Body=b"B" * 1000)  # same size, other bytes
    local = workspace / "elsewhere"
    os.rename(folder, local)
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match=f"Refused s3://{BUCKET}/{key}: its sha256"):
        transfer.pull(Remote(f"s3://{BUCKET}/alt", workspace), folder)
    assert [r.getMessage() for r in caplog.records if "Refused" in r.getMessage()] == [
        f"Refused s3://{BUCKET}/{key.rsplit('/', 1)[0]}/b.bin: its sha256 differs from its marker's; pulling it again"
    ]
    assert not folder.exists() and not list(folder.parent.glob("*.pull-*"))  # nothing half-pulled is left


def test_a_truncated_remote_file_is_a_miss_and_a_push_replaces_the_damaged_copy(
    aws: SeaweedFS, workspace: Path
) -> None:
    folder = _folder(workspace, "cut2-0123456789ab", {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000})
    assert transfer.push(Remote(f"s3://{BUCKET}/trunc", workspace), folder) == transfer.PUSHED
    marker = markers.read_marker(folder)
    assert marker is not None
    key = f"trunc/models/{folder.name}/{marker['run_id']}/b.bin"
    aws.client().put_object(Bucket=BUCKET, Key=key, Body=b"b" * 10)
    store = Remote(f"s3://{BUCKET}/trunc", workspace)
    assert store.check(folder, marker["identity"], None) == ["remote file b.bin has 10 bytes, its marker says 1000"]
    assert transfer.push(store, folder) == transfer.PUSHED  # the host that has it repairs the remote
    assert Remote(f"s3://{BUCKET}/trunc", workspace).check(folder, marker["identity"], None) == []

    # A marker edited in the bucket no longer matches its seal: a miss too, and repaired the same way.
    marker_key = f"trunc/models/{folder.name}/{markers.MARKER}"
    edited = json.loads(aws.client().get_object(Bucket=BUCKET, Key=marker_key)["Body"].read())
    edited["files"]["b.bin"]["size"] = 10
    aws.client().put_object(Bucket=BUCKET, Key=marker_key, Body=json.dumps(edited).encode())
    store = Remote(f"s3://{BUCKET}/trunc", workspace)
    assert store.check(folder, marker["identity"], None) == [
        f"remote marker {markers.MARKER} was edited after it was written: not trusted"
    ]
    assert transfer.push(store, folder) == transfer.PUSHED
    assert Remote(f"s3://{BUCKET}/trunc", workspace).check(folder, marker["identity"], None) == []


def _run_shards(server: SeaweedFS, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run(["luigi", "--module", "pipeline", "CreateShards", "--local-scheduler"], folder, env)


def _remote_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "RemoteError" in line]


def test_an_unreachable_remote_is_one_line_naming_the_endpoint_and_nothing_local_is_lost(
    server: SeaweedFS, tmp_path: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    said = (
        f"RemoteError: No answer from the remote s3://{BUCKET}/nowhere at {nobody}: start it, or set its address as "
        "endpoint_url (AWS_ENDPOINT_URL or the profile's endpoint_url), then run again; what is published locally "
        "is kept."
    )
    # A host with nothing yet: the run ends while it is scheduled, before any work.
    fresh = host_folder(tmp_path / "fresh", f"s3://{BUCKET}/nowhere")
    out = _run_shards(server, fresh, server.env(AWS_ENDPOINT_URL=nobody))
    text = out.stdout + out.stderr
    assert out.returncode == 40, text  # [retcode] unhandled_exception: a setting to fix
    assert _remote_lines(text) == ["ERROR: " + said] and "Traceback" not in text
    assert not (fresh / "data").exists()

    # A host whose shards are made (before the remote was set): the push fails, the shards stay.
    host = host_folder(tmp_path / "host", "")
    assert _run_shards(server, host, server.env()).returncode == 0
    (shards,) = (host / "data" / "shards").iterdir()
    before = markers.read_marker(shards)
    host_folder(host, f"s3://{BUCKET}/nowhere")
    out = _run_shards(server, host, server.env(AWS_ENDPOINT_URL=nobody))
    text = out.stdout + out.stderr
    assert out.returncode == 30, text  # [retcode] task_failed: the stage's push failed
    (line,) = _remote_lines(text)
    assert line.strip() == said and "Traceback" not in text
    assert markers.read_marker(shards) == before and [p.name for p in shards.parent.iterdir()] == [shards.name]
    assert markers.check_output(shards, Identity(**_identity_fields(before)), None) == []


def _identity_fields(marker: dict[str, Any] | None) -> dict[str, Any]:
    assert marker is not None
    return {name: marker[name] for name in Identity.__dataclass_fields__}


@pytest.mark.parametrize("case", ["wrong", "missing"])
def test_bad_credentials_are_one_line_before_any_work(server: SeaweedFS, tmp_path: Path, case: str) -> None:
    host = host_folder(tmp_path / "host", f"s3://{BUCKET}/creds")
    if case == "wrong":
        env = server.env(AWS_SECRET_ACCESS_KEY="not-" + server.secret_key[4:])
    else:
        env = {k: v for k, v in server.env().items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    out = _run_shards(server, host, env)
    text = out.stdout + out.stderr
    assert out.returncode == 40, text
    lines = [line for line in text.splitlines() if "RemoteError" in line]
    expected = "refused the credentials" if case == "wrong" else "No AWS credentials for the remote"
    assert len(lines) == 1 and expected in lines[0] and server.endpoint in lines[0], text
    assert "Traceback" not in text and server.secret_key[4:] not in text
    assert not (host / "data").exists()  # before any work


def test_two_hosts_racing_to_publish_one_identity_make_one_publication(server: SeaweedFS, tmp_path: Path) -> None:
    # Each host builds the shards on its own first (same identity, runs of their own), then both push at once.
    hosts = [host_folder(tmp_path / name, "") for name in ("a", "b")]
    for host in hosts:
        assert (
            run(["luigi", "--module", "pipeline", "CreateShards", "--local-scheduler"], host, server.env()).returncode
            == 0
        )
    built = {host: markers.read_marker(next((host / "data" / "shards").iterdir())) for host in hosts}
    assert len({marker["run_id"] for marker in built.values() if marker}) == 2
    for host in hosts:
        host_folder(host, f"s3://{BUCKET}/race")
    # --no-lock: both "hosts" are on this machine, where Luigi lets one such command run at a time.
    command = [str(VENV_BIN / "luigi"), "--module", "pipeline", "CreateShards", "--local-scheduler", "--no-lock"]
    env = dict(server.env(), TF_CPP_MIN_LOG_LEVEL="2")
    procs = [
        subprocess.Popen(command, cwd=host, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for host in hosts
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    remote_markers = [key for key in server.objects("race/") if key.endswith(markers.MARKER)]
    assert len(remote_markers) == 1
    published = json.loads(server.client().get_object(Bucket=BUCKET, Key=remote_markers[0])["Body"].read())
    assert published in built.values()  # one host's run, as it made it
    for host in hosts:  # both hold it now: the second replaced its own with the winner's
        assert markers.read_marker(next((host / "data" / "shards").iterdir())) == published, outputs
    assert sum("another host's copy adopted" in out for out in outputs) == 1, outputs


def test_of_puts_racing_on_one_marker_one_creates_it(aws: SeaweedFS, workspace: Path) -> None:
    """The create-only put itself, from 8 threads at once: one wins, no one overwrites."""
    store = Remote(f"s3://{BUCKET}/puts", workspace)
    barrier = threading.Barrier(8)

    def put(index: int) -> bool:
        barrier.wait()
        return transfer._put_if_absent(store, "puts/marker", f"writer {index}".encode())

    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(put, range(8)))
    assert created.count(True) == 1
    assert store.get("puts/marker") == f"writer {created.index(True)}".encode()


def test_a_deleted_remote_object_is_a_miss_that_reruns_the_stage(server: SeaweedFS, tmp_path: Path) -> None:
    """Host A publishes the shards; one shard goes from the bucket; host B builds them anew (never a stale
    hit, never an error), and its push makes the remote whole again."""
    a = host_folder(tmp_path / "a", f"s3://{BUCKET}/deleted")
    assert _run_shards(server, a, server.env()).returncode == 0
    (folder,) = (a / "data" / "shards").iterdir()
    marker = markers.read_marker(folder)
    assert marker is not None
    shard = next(rel for rel in marker["files"] if rel.endswith(".tfrecord"))
    key = f"deleted/data/shards/{folder.name}/{marker['run_id']}/{shard}"
    server.client().delete_object(Bucket=BUCKET, Key=key)

    # B names the remote on the command line (--paths-remote), its luigi.cfg does not.
    b = host_folder(tmp_path / "b", "")
    flag = ["--paths-remote", f"s3://{BUCKET}/deleted"]
    status = run(["python", "-m", "pipeline", "status", "CreateShards", *flag], b, server.env())
    assert status.returncode == 1 and f"remote file {shard} is missing" in status.stdout, status.stdout
    out = run(["luigi", "--module", "pipeline", "CreateShards", "--local-scheduler", *flag], b, server.env())
    assert out.returncode == 0 and "Ran: CreateShards." in out.stdout, out.stdout + out.stderr
    rebuilt = markers.read_marker(b / "data" / "shards" / folder.name)
    assert rebuilt is not None and rebuilt["run_id"] != marker["run_id"]
    remote_marker = json.loads(
        server.client()
        .get_object(Bucket=BUCKET, Key=f"deleted/data/shards/{folder.name}/{markers.MARKER}")["Body"]
        .read()
    )
    assert remote_marker == rebuilt  # B's run replaced the broken copy
