"""Clean-up with a remote, against a real S3 server (SeaweedFS): `gc` touches the remote only with
--remote, under the same keep rules; the pulled copies stay within their size limit, locally only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import remote_gc
from pipeline.cli.gc import main as gc
from pipeline.core import markers, pulled, transfer
from pipeline.core import remote as remotes
from pipeline.core.identity import Identity
from tests.conftest import Config
from tests.seaweed import BUCKET, SeaweedFS, running_seaweedfs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with running_seaweedfs(tmp_path_factory.mktemp("s3")) as started:
        yield started


@pytest.fixture
def remote(server: SeaweedFS, workspace: Path, config: Config, monkeypatch: pytest.MonkeyPatch) -> remotes.Remote:
    """The workspace's root with a remote of its own, reached through the environment."""
    for key in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in server.env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    config.set("paths", "remote", f"s3://{BUCKET}/{workspace.name}")
    found = remotes.configured()
    assert found is not None
    return found


def _folder(root: Path, kind: str, name: str, size: int) -> Path:
    folder = root / kind / name
    folder.mkdir(parents=True)
    (folder / "data.bin").write_bytes(os.urandom(size))
    markers.write_marker(folder, Identity(stage="Made", params={"name": name}, code={}), {})
    return folder


def test_gc_removes_from_the_remote_only_with_remote_and_under_the_keep_rules(
    remote: remotes.Remote, server: SeaweedFS, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _folder(remote.root, "models", "old-0123456789ab", 2000)
    assert transfer.push(remote, old) == transfer.PUSHED
    prefix = remote.key("models/" + old.name)
    server.client().put_object(Bucket=BUCKET, Key=f"{prefix}/lostrace/data.bin", Body=b"x" * 10)  # a loser's upload
    monkeypatch.setattr(remote_gc, "IN_PROGRESS_SECONDS", 0)
    everything = set(server.objects(remote.prefix + "/"))
    assert len(everything) == 3

    assert gc(["--yes", "--unused", "--keep-last", "0"]) == 0  # the local root only
    assert set(server.objects(remote.prefix + "/")) == everything and not old.exists()
    assert gc(["--remote"]) == 0  # lists, removes nothing
    listed = capsys.readouterr().out
    assert (
        f"models/{old.name}/lostrace  [remote upload]" in listed
        and f"models/{old.name}  [Made remote result]" in listed
    )
    assert set(server.objects(remote.prefix + "/")) == everything

    assert gc(["--remote", "--yes"]) == 0  # the leftover goes, the result stays (no --unused)
    assert set(server.objects(remote.prefix + "/")) == everything - {f"{prefix}/lostrace/data.bin"}
    assert gc(["--remote", "--yes", "--unused", "--keep-last", "1"]) == 0  # the newest of its stage: kept
    assert len(server.objects(remote.prefix + "/")) == 2
    assert gc(["--remote", "--yes", "--unused", "--keep-last", "0"]) == 0
    assert server.objects(remote.prefix + "/") == {}


def test_the_pulled_copies_stay_within_their_limit_locally_only(remote: remotes.Remote, config: Config) -> None:
    made_here = _folder(remote.root, "models", "here-0123456789ab", 3_000_000)  # never a cached copy
    copies = [_folder(remote.root, "data/shards", f"s{i}-0123456789ab", 1_000_000) for i in range(3)]
    for folder in copies:
        transfer.push(remote, folder)
        os.rename(folder, folder.with_name(folder.name + ".elsewhere"))
    for folder in copies:  # pulled in this order: s0 is the least recently used, then s1
        transfer.pull(remote, folder)
    pulled.used(copies[0])  # ... but s0 was read since: s1 is now the oldest
    config.set("paths", "pulled_limit_gb", "0.0025")
    assert pulled.evict(pulled.limit_bytes(), keep={copies[2]}) == [copies[1]]
    assert [folder.is_dir() for folder in copies] == [True, False, True] and made_here.is_dir()
    aside = markers.read_marker(copies[1].with_name(copies[1].name + ".elsewhere"))
    assert aside is not None and remote.check(copies[1], aside["identity"], None) == []  # the remote keeps it
    assert pulled.evict(pulled.limit_bytes(), keep=set(copies)) == [] and made_here.is_dir()


def test_importing_the_pipeline_and_its_commands_imports_no_botocore(tmp_path: Path) -> None:
    """A run without a remote (and every up-to-date check of a host whose outputs are here) never loads it."""
    code = (
        "import sys, pipeline, pipeline.__main__, pipeline.cli.status, pipeline.cli.gc, pipeline.experiments.runs\n"
        "print(sorted(name for name in ('boto3', 'botocore', 's3transfer') if name in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
