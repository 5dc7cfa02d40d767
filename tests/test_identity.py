"""Stage identity, markers and publishing (pipeline/core/identity.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.core import identity, markers, publish, values


def test_normalise_spells_equal_numbers_once() -> None:
    assert values.digest({"lr": 0.01}) == values.digest({"lr": 1e-2})
    assert values.digest({"lr": 0.01}) != values.digest({"lr": 0.011})
    assert values.normalise((1, 2.5, {"b": 1, "a": None})) == [1, 2.5, {"a": None, "b": 1}]


SOURCE = '''
"""Module docstring."""
def f(x):
    """Docstring."""
    return x + 1  # a comment
'''


def test_code_digest_ignores_comments_docstrings_and_formatting() -> None:
    base = identity.code_digest(SOURCE)
    reformatted = "def f(x):\n    return (x +\n            1)\n"
    assert identity.code_digest(reformatted) == base
    assert identity.code_digest(SOURCE.replace("# a comment", "# another")) == base
    assert identity.code_digest(SOURCE.replace("Docstring.", "Other words.")) == base
    assert identity.code_digest(SOURCE.replace("x + 1", "x + 2")) != base


def test_code_digest_of_one_class() -> None:
    source = "class A:\n    x = 1\n\nclass B:\n    y = 2\n"
    a = identity.code_digest(source, "A")
    assert identity.code_digest(source.replace("y = 2", "y = 3"), "A") == a
    assert identity.code_digest(source.replace("x = 1", "x = 3"), "A") != a
    with pytest.raises(ValueError, match="No class 'C'"):
        identity.code_digest(source, "C")


def _ident(**params: object) -> identity.Identity:
    return identity.Identity(stage="S", params=dict(params), code={"pipeline/x.py": "abc"})


def _published(tmp_path: Path, ident: identity.Identity, upstream: dict[str, str | None]) -> Path:
    staging = tmp_path / "out.partial"
    (staging / "sub").mkdir(parents=True)
    (staging / "a.bin").write_bytes(b"hello")
    (staging / "sub" / "b.txt").write_text("world")
    markers.write_marker(staging, ident, upstream)
    final = tmp_path / "out"
    publish.publish(staging, final)
    return final


def test_marker_records_files_and_publish_is_a_rename(tmp_path: Path) -> None:
    ident = _ident(n=1)
    final = _published(tmp_path, ident, {"Up": "d1"})
    assert not (tmp_path / "out.partial").exists()
    marker = markers.read_marker(final)
    assert marker is not None
    assert set(marker["files"]) == {"a.bin", "sub/b.txt"}
    assert marker["files"]["a.bin"]["size"] == 5
    assert marker["identity"] == ident.digest
    assert markers.check_output(final, ident, {"Up": "d1"}) == []


def test_check_output_reasons(tmp_path: Path) -> None:
    ident = _ident(n=1)
    final = _published(tmp_path, ident, {"Up": "d1"})
    assert markers.check_output(final, ident, {"Up": "d2"}) == ["upstream Up output changed since this ran"]
    reasons = markers.check_output(final, _ident(n=2), {"Up": "d1"})
    assert reasons and "parameter n changed from 1 to 2" in reasons[0]
    assert markers.check_output(tmp_path / "nothing", ident, None) == ["no output yet"]


def test_touch_is_not_a_change_but_new_bytes_are(tmp_path: Path) -> None:
    ident = _ident(n=1)
    final = _published(tmp_path, ident, {})
    path = final / "a.bin"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert markers.check_output(final, ident, {}) == []
    # The new mtime is remembered, so the next check does not hash again.
    marker = markers.read_marker(final)
    assert marker is not None and marker["files"]["a.bin"]["mtime_ns"] == path.stat().st_mtime_ns

    path.write_bytes(b"HELLO")  # same size, other bytes
    assert markers.check_output(final, ident, {}) == ["output file a.bin was altered (content differs)"]
    path.unlink()
    assert markers.check_output(final, ident, {}) == ["output file a.bin is missing"]


def test_unreadable_marker_is_not_complete(tmp_path: Path) -> None:
    ident = _ident(n=1)
    final = _published(tmp_path, ident, {})
    (final / markers.MARKER).write_text("{not json")
    assert markers.check_output(final, ident, {}) == ["marker unreadable"]


def test_publish_refuses_a_folder_without_marker(tmp_path: Path) -> None:
    staging = tmp_path / "x.partial"
    staging.mkdir()
    with pytest.raises(RuntimeError, match=r"no valid _SUCCESS\.json"):
        publish.publish(staging, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_publish_replaces_an_older_output_of_the_same_identity(tmp_path: Path) -> None:
    ident = _ident(n=1)
    _published(tmp_path, ident, {})
    final = _published(tmp_path, ident, {"Up": "new"})
    marker = markers.read_marker(final)
    assert marker is not None and marker["upstream_content"] == {"Up": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_file_code_digest_follows_the_bytes_through_its_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "CODE_DIGEST_CACHE", tmp_path / "cache" / "code_digests.json")
    monkeypatch.setattr(identity, "_code_cache", None)
    module = tmp_path / "m.py"
    module.write_text("def f():\n    return 1\n")
    first = identity.file_code_digest(module)
    assert first == identity.code_digest(module.read_text())
    stat = module.stat()
    module.write_text("def f():\n    return 2\n")  # same size, same mtime: still a new digest
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = identity.file_code_digest(module)
    assert second != first and second == identity.code_digest(module.read_text())
    monkeypatch.setattr(identity, "_code_cache", None)  # a new process reads the cache file
    assert identity.file_code_digest(module) == second
    assert len(json.loads((tmp_path / "cache" / "code_digests.json").read_text())) == 2


def _keras_archive(path: Path, date: str, ids: list[int], weights: bytes) -> Path:
    """A `.keras` zip as Keras 3 writes one: metadata (save date), config (object ids), weights."""
    import zipfile

    config = {"layers": [{"dtype": {"name": "float32", "shared_object_id": i}} for i in ids]}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1", "date_saved": date}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", weights)
    return path


def test_a_keras_archive_content_leaves_out_save_date_and_object_addresses(tmp_path: Path) -> None:
    first = _keras_archive(tmp_path / "a.keras", "2026-11-28@13:36:10", [140358117095952] * 2, b"w" * 64)
    again = _keras_archive(tmp_path / "b.keras", "2026-11-28@13:36:26", [140306752461456] * 2, b"w" * 64)
    assert markers.file_sha256(first) != markers.file_sha256(again)
    assert markers.keras_archive_content(first) == markers.keras_archive_content(again)
    # Other weights, or other sharing between objects (one object twice vs two objects), are other content.
    other_weights = _keras_archive(tmp_path / "c.keras", "2026-11-28@13:36:10", [7, 7], b"v" * 64)
    unshared = _keras_archive(tmp_path / "d.keras", "2026-11-28@13:36:10", [7, 8], b"w" * 64)
    contents = {markers.keras_archive_content(p) for p in (first, other_weights, unshared)}
    assert len(contents) == 3


def test_content_digest_leaves_out_volatile_files(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "events").mkdir(parents=True)
    (folder / "history.json").write_text("[1, 2]")
    (folder / "events" / "events.out.1").write_bytes(b"time 1")
    marker = markers.write_marker(folder, _ident(n=1), {}, volatile=("events/*",))
    (folder / "events" / "events.out.1").unlink()
    (folder / "events" / "events.out.2").write_bytes(b"time 2")
    again = markers.write_marker(folder, _ident(n=1), {}, volatile=("events/*",))
    assert again["content_digest"] == marker["content_digest"]
    assert markers.write_marker(folder, _ident(n=1), {})["content_digest"] != marker["content_digest"]
    (folder / "history.json").write_text("[1, 3]")
    assert (
        markers.write_marker(folder, _ident(n=1), {}, volatile=("events/*",))["content_digest"]
        != marker["content_digest"]
    )
