"""The folders `mwa prepare` and `mwa index` write follow the run folder's rules: a folder holding someone else's
files is never written into, a data dir of another photos folder is replaced only with --force, a second writer
is refused while the first holds the lock (real processes), and what a killed writer left is removed by the next
run (the kill itself: tests/e2e/test_fault_injection.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from tests.helpers.paths import REPO
from tests.helpers.photos import make_photos

runner = CliRunner()


def flat(res) -> str:
    return " ".join(res.output.split())


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("out_photos") / "photos", n=6)


def _prepare(photos: Path, out: Path, *extra: str):
    return runner.invoke(app, ["prepare", str(photos), "--out", str(out), "--image-size", "32", "--workers", "1",
                               *extra])


def test_prepare_never_overwrites_a_folder_it_did_not_make(photos, tmp_path):
    docs = tmp_path / "userdocs"
    docs.mkdir()
    (docs / "manifest.csv").write_text("the user's own table\n")
    (docs / "notes.txt").write_text("keep")
    for extra in ([], ["--force"]):
        res = _prepare(photos, docs, *extra)
        assert res.exit_code == 2 and "holds files mwa did not write" in flat(res), flat(res)
    assert sorted(p.name for p in docs.iterdir()) == ["manifest.csv", "notes.txt"]
    assert (docs / "manifest.csv").read_text() == "the user's own table\n"


def test_prepare_replaces_another_dataset_only_with_force(photos, tmp_path):
    out = tmp_path / "data"
    assert _prepare(photos, out).exit_code == 0
    assert json.loads((out / ".mwa-data").read_text())["source"] == str(photos.resolve())
    other = make_photos(tmp_path / "other", n=4)
    before = (out / "manifest.csv").read_bytes()
    res = _prepare(other, out)
    assert res.exit_code == 2 and "holds the dataset prepared from" in flat(res) and "--force" in flat(res)
    assert (out / "manifest.csv").read_bytes() == before
    assert _prepare(photos, out).exit_code == 0  # the same photos again: an ordinary re-run
    res = _prepare(other, out, "--force")
    assert res.exit_code == 0, flat(res)
    assert json.loads((out / "dataset.json").read_text())["source"] == str(other.resolve())


def _hold_lock(folder: Path, kind: str) -> subprocess.Popen:
    """Another process holding the folder's lock as a writer would (the same code), until killed."""
    code = (f"import sys, time; from pathlib import Path; from mwa_cli.outdir import FolderLock; "
            f"FolderLock(Path({str(folder)!r}), {kind!r}).acquire(); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_prepare_is_refused_while_one_writes(photos, tmp_path):
    out = tmp_path / "data"
    assert _prepare(photos, out).exit_code == 0
    holder = _hold_lock(out, "data")
    try:
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
        res = _prepare(photos, out)
        assert res.exit_code == 2, flat(res)
        assert f"data directory {out} is being written by mwa process {holder.pid}" in flat(res)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before
    finally:
        holder.kill()
        holder.wait()
    assert _prepare(photos, out).exit_code == 0  # the kernel released the killed holder's lock


def test_prepare_removes_what_a_killed_prepare_left(photos, tmp_path):
    out = tmp_path / "data"
    assert _prepare(photos, out).exit_code == 0
    junk = [out / "cache" / ".staging_32_deadbeef.u8", out / "cache" / ".caching_32_deadbeef.u8",
            out / ".manifest.csv.x1y2.tmp", out / "cache" / ".images_32.u8.abcd.tmp"]
    for j in junk:
        j.write_bytes(b"x" * 100)
    assert _prepare(photos, out).exit_code == 0
    assert not [j for j in junk if j.exists()]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    from tests.unit.search.test_index import _make_run

    return _make_run(tmp_path_factory.mktemp("out_adapter") / "run")


def _index(photos: Path, adapter: Path, out: Path, *extra: str):
    return runner.invoke(app, ["index", str(photos), "--adapter", str(adapter), "--out", str(out), "--device", "cpu",
                               *extra])


def test_index_never_writes_into_a_folder_it_did_not_make(photos, adapter, tmp_path):
    docs = tmp_path / "userdocs"
    docs.mkdir()
    (docs / "manifest.csv").write_text("mine\n")
    for extra in ([], ["--rebuild"]):
        res = _index(photos, adapter, docs, *extra)
        assert res.exit_code == 2 and "holds files mwa did not write" in flat(res), flat(res)
    assert [p.name for p in docs.iterdir()] == ["manifest.csv"]


def test_prepare_and_index_after_a_kill_before_the_marker_just_work(photos, adapter, tmp_path):
    for out in (tmp_path / "data", tmp_path / "idx"):
        out.mkdir()
        (out / ".lock").write_text("mwa process 4242")  # all a kill between lock and marker leaves
    assert _prepare(photos, tmp_path / "data").exit_code == 0
    res = _index(photos, adapter, tmp_path / "idx")
    assert res.exit_code == 0, flat(res)


def test_index_after_a_killed_first_run_just_works(photos, adapter, tmp_path):
    out = tmp_path / "idx"
    out.mkdir()
    (out / ".mwa-index").write_text(json.dumps({"kind": "index"}))  # what a killed first `mwa index` leaves
    (out / ".staging_0badf00d.u8").write_bytes(b"x" * 1000)
    (out / ".embeddings.safetensors.1234.tmp").write_bytes(b"x")
    res = _index(photos, adapter, out)
    assert res.exit_code == 0, flat(res)
    assert sorted(p.name for p in out.iterdir()) == [".lock", ".mwa-index", ".mwa-verified.json",
                                                     "embeddings.safetensors", "index.json", "manifest.csv",
                                                     "rejected.csv"]


def test_a_second_index_is_refused_while_one_writes(photos, adapter, tmp_path):
    out = tmp_path / "idx"
    assert _index(photos, adapter, out).exit_code == 0
    holder = _hold_lock(out, "index")
    try:
        res = _index(photos, adapter, out)
        assert res.exit_code == 2 and f"is being written by mwa process {holder.pid}" in flat(res), flat(res)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    assert _index(photos, adapter, out).exit_code == 0
