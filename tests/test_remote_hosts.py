"""Two hosts that share no folder, only a real S3 server (SeaweedFS) and a real luigid: host A runs the
DAG, host B reuses it by identity, pulling only what it reads, and each sees the other's runs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core import markers
from tests.scheduler import Luigid, running_luigid
from tests.seaweed import BUCKET, SeaweedFS, host_folder, run, running_seaweedfs

PREFIX = "team/sine"


@dataclass
class Hosts:
    server: SeaweedFS
    scheduler: Luigid
    a: Path
    b: Path
    env_a: dict[str, str]
    env_b: dict[str, str]
    logs: list[str]  # everything the commands printed


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    base = tmp_path_factory.mktemp("two_hosts")
    with running_seaweedfs(base / "s3") as server, running_luigid(base / "luigid") as scheduler:
        a = host_folder(base / "host_a", f"s3://{BUCKET}/{PREFIX}")
        b = host_folder(base / "host_b", f"s3://{BUCKET}/{PREFIX}")
        # A reaches the bucket through the environment; B through a profile with endpoint_url.
        profile = base / "host_b" / "aws"
        profile.mkdir()
        (profile / "config").write_text(f"[profile shared]\nendpoint_url = {server.endpoint}\nregion = us-east-1\n")
        (profile / "credentials").write_text(
            f"[shared]\naws_access_key_id = {server.access_key}\naws_secret_access_key = {server.secret_key}\n"
        )
        env_b = server.env(
            AWS_PROFILE="shared",
            AWS_CONFIG_FILE=str(profile / "config"),
            AWS_SHARED_CREDENTIALS_FILE=str(profile / "credentials"),
        )
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env_b.pop(name)
        yield Hosts(server, scheduler, a, b, server.env(), env_b, [])


def _luigi(hosts: Hosts, folder: Path, env: dict[str, str], *args: str) -> str:
    out = run(["luigi", "--module", "pipeline", "PlotInference", *hosts.scheduler.cli(), *args], folder, env)
    hosts.logs.append(out.stdout + out.stderr)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return out.stdout + out.stderr


def _ran(log: str) -> set[str]:
    (line,) = re.findall(r"^Ran: (.*?)\. Reused", log, re.M)
    return set() if line == "nothing" else set(line.split(", "))


def _folders(root: Path, kind: str) -> list[str]:
    parent = root / kind
    return sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []


def test_two_hosts_share_work_through_the_remote(hosts: Hosts) -> None:
    # A runs the whole DAG and publishes every stage to the remote.
    log_a = _luigi(hosts, hosts.a, hosts.env_a)
    assert _ran(log_a) == {"CreateShards", "TrainEstimator", "EvaluateEstimator", "PlotInference"}
    keys = hosts.server.objects(PREFIX + "/")
    remote_markers = sorted(key for key in keys if key.endswith("/" + markers.MARKER))
    published_a = sorted(
        f"{PREFIX}/{folder.relative_to(hosts.a).as_posix()}/{markers.MARKER}"
        for kind in ("data/shards", "models", "reports")
        for folder in (hosts.a / kind).iterdir()
    )
    assert remote_markers == published_a
    assert len(remote_markers) == 4
    client = hosts.server.client()
    for key in remote_markers:  # each marker's files are in the remote, at their sizes
        folder = key.rsplit("/", 1)[0]
        marker = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert marker == markers.read_marker(hosts.a / folder.removeprefix(PREFIX + "/"))
        for rel, record in marker["files"].items():
            assert keys[f"{folder}/{marker['run_id']}/{rel}"] == record["size"]

    # B, same parameters: nothing runs, and only the reports its results block shows are pulled.
    log_b = _luigi(hosts, hosts.b, hosts.env_b)
    assert _ran(log_b) == set()
    assert _folders(hosts.b, "models") == [] and _folders(hosts.b, "data/shards") == []
    assert _folders(hosts.b, "reports") == _folders(hosts.a, "reports")
    for name in _folders(hosts.b, "reports"):
        pulled = markers.read_marker(hosts.b / "reports" / name)
        assert pulled == markers.read_marker(hosts.a / "reports" / name)
        assert pulled is not None and all((hosts.b / "reports" / name / rel).is_file() for rel in pulled["files"])
    assert re.search(r"Validation: .*mse [0-9.e-]+", log_b)

    # B's status says where each stage's output is.
    status = run(["python", "-m", "pipeline", "status", "PlotInference"], hosts.b, hosts.env_b)
    assert status.returncode == 0, status.stdout + status.stderr
    states = dict(re.findall(r"^(\w+)\s+up to date \((\w+)\)", status.stdout, re.M))
    assert states == {
        "CreateShards": "remote",
        "TrainEstimator": "remote",
        "EvaluateEstimator": "both",
        "PlotInference": "both",
    }

    # B, another learning rate: trains, evaluates and plots, reusing A's shards (pulled, not rebuilt).
    log_lr = _luigi(hosts, hosts.b, hosts.env_b, "--TrainEstimator-learning-rate", "0.02")
    assert _ran(log_lr) == {"TrainEstimator", "EvaluateEstimator", "PlotInference"}
    assert _folders(hosts.b, "data/shards") == _folders(hosts.a, "data/shards")
    shards = _folders(hosts.a, "data/shards")[0]
    assert markers.read_marker(hosts.b / "data/shards" / shards) == markers.read_marker(
        hosts.a / "data/shards" / shards
    )
    assert "Pulled " + shards in log_lr

    # A sees B's model in `runs`, with its metrics.
    out = run(["python", "-m", "pipeline", "runs", "--json"], hosts.a, hosts.env_a)
    assert out.returncode == 0, out.stderr
    hosts.logs.append(out.stdout + out.stderr)
    rows = json.loads(out.stdout)
    assert len(rows) == 2
    (b_row,) = [row for row in rows if row["params"]["TrainEstimator.learning_rate"] == 0.02]
    assert b_row["run"] not in _folders(hosts.a, "models") and b_row["run"] in _folders(hosts.b, "models")
    assert isinstance(b_row["metrics"]["validation.mse"], float)

    # diff compares A's model with B's, which is only in the remote.
    (a_model,) = _folders(hosts.a, "models")
    diff = run(["python", "-m", "pipeline", "diff", a_model, b_row["run"]], hosts.a, hosts.env_a)
    assert diff.returncode == 0, diff.stderr
    assert re.search(r"learning_rate.*0\.02", diff.stdout), diff.stdout

    # The report includes it too.
    report = run(["python", "-m", "pipeline", "report", "--out", str(hosts.a / "runs.html")], hosts.a, hosts.env_a)
    assert report.returncode == 0, report.stderr
    page = (hosts.a / "runs.html").read_text()
    assert b_row["run"] in page and page.count("<img") >= 6  # both runs' figures (B's pulled)


def test_secrets_are_written_nowhere(hosts: Hosts) -> None:
    """Neither key reaches a marker, a log, `runs --json` or the report (after the test above)."""
    secret, access = hosts.server.secret_key, hosts.server.access_key
    assert hosts.logs, "runs after test_two_hosts_share_work_through_the_remote"
    for text in hosts.logs:
        assert secret not in text and access not in text
    for root in (hosts.a, hosts.b, hosts.scheduler.folder):  # the artifact roots, their state, luigid's
        for path in root.rglob("*"):
            if path.is_file() and "aws" not in path.parts:  # B's own credentials file is the user's
                data = path.read_bytes()
                assert secret.encode() not in data and access.encode() not in data, path
    client = hosts.server.client()
    for key in hosts.server.objects():
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert secret.encode() not in body and access.encode() not in body, key
