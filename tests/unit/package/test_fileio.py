"""mwa_cli.fileio: files and folders replaced atomically, synced before they are published."""

from __future__ import annotations

import os

import pytest

from mwa_cli import fileio
from mwa_cli.errors import CheckpointError
from mwa_cli.models.checkpoint import download


def _fill(text: str):
    def fill(tmp):
        with fileio.synced_file(tmp / "a.txt", "w") as f:
            f.write(text)
    return fill


def test_atomic_dir_replaces_the_folder_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "last"
    fileio.atomic_dir(target, _fill("one"))
    fileio.atomic_dir(target, _fill("two"))
    assert (target / "a.txt").read_text(encoding="utf-8") == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_atomic_dir_renames_the_old_folder_away_before_the_new_one_in(tmp_path, monkeypatch):
    """The order crash safety depends on: between the two renames only `last.old` exists, and it is complete."""
    target = tmp_path / "last"
    fileio.atomic_dir(target, _fill("one"))
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((os.path.basename(src), os.path.basename(dst)))
        if len(seen) == 2:  # what a reader finds at the instant between the renames
            assert not target.exists() and (tmp_path / "last.old" / "a.txt").read_text(encoding="utf-8") == "one"
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    fileio.atomic_dir(target, _fill("two"))
    assert seen[0] == ("last", "last.old") and seen[1][0].startswith(fileio.TEMP_DIR_PREFIX) and seen[1][1] == "last"


def test_atomic_dir_syncs_the_new_folder_before_publishing_it(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(fileio, "fsync_dir", lambda p: events.append(("fsync", p.name)))
    real_replace = os.replace
    monkeypatch.setattr(fileio.os, "replace", lambda s, d: (events.append(("replace", os.path.basename(s))),
                                                             real_replace(s, d)))
    fileio.atomic_dir(tmp_path / "last", _fill("one"))
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"] and events[0][1].startswith(".tmp-")


def test_a_failing_fill_keeps_the_old_folder_and_removes_its_temporary_one(tmp_path):
    target = tmp_path / "last"
    fileio.atomic_dir(target, _fill("one"))

    def broken(tmp):
        (tmp / "half").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        fileio.atomic_dir(target, broken)
    assert (target / "a.txt").read_text(encoding="utf-8") == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_synced_file_fsyncs_what_it_wrote(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    with fileio.synced_file(tmp_path / "b.bin") as f:
        f.write(b"abc")
    assert len(synced) == 1 and (tmp_path / "b.bin").read_bytes() == b"abc"


def test_download_writes_through_a_temporary_file(tmp_path):
    source = tmp_path / "src" / "w.safetensors"
    source.parent.mkdir()
    source.write_bytes(b"weights" * 1000)
    cache = tmp_path / "cache"
    got = download(source.as_uri(), cache_dir=cache)
    assert got == cache / "w.safetensors" and got.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["w.safetensors"]
    with pytest.raises(CheckpointError, match="could not download"):
        download((tmp_path / "src" / "missing.pth").as_uri(), cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == ["w.safetensors"]
