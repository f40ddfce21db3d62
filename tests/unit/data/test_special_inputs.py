"""Special files and odd names in a photos folder end in a rejection with its reason (or a clear stop), never a hang
or an internal error, and every file is accounted for: real FIFOs (os.mkfifo) as a photo listed in captions.csv,
in a class folder, as a sidecar .txt, as captions.csv itself; a captions.csv linking out of the folder; NFC and NFD
twins; a name that is not UTF-8; an unreadable sub-folder (permissions applied to root with setpriv); a folder
nested 1,900 levels deep. `mwa index` and `mwa search --image` get the same rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from tests.helpers.paths import REPO
from tests.helpers.photos import make_photos
from tests.helpers.special_files import finishes_within, make_fifo, without_root_powers

runner = CliRunner()
LIMIT_S = 60


def flat(res) -> str:
    return " ".join(res.output.split())


def prepare(photos: Path, out: Path, *extra: str, fifos: list[Path] = ()):
    """`mwa prepare` in this process, failing (not hanging) when it blocks; the summary's counts, as JSON."""
    res = finishes_within(LIMIT_S, lambda: runner.invoke(app, ["prepare", str(photos), "--out", str(out),
                                                                "--image-size", "32", *extra]), list(fifos))
    assert "internal error" not in res.output and "Traceback" not in res.output, res.output
    return res


def rejected(out: Path) -> dict[str, str]:
    df = pd.read_csv(out / "rejected.csv", dtype=str, keep_default_na=False)
    return dict(zip(df["path"], df["reason"]))


def assert_accounted(out: Path) -> None:
    """Every file found is used or rejected, and the internal check never speaks."""
    counts = json.loads((out / "dataset.json").read_text())["counts"]["files"]
    assert counts["used"] + counts["rejected"] == counts["found"], counts
    assert "internal check" not in (out / "data_report.json").read_text()


def test_a_fifo_listed_in_the_captions_table(tmp_path):
    photos = make_photos(tmp_path / "photos", n=6)
    fifo = make_fifo(photos / "images" / "fifo.jpg")
    with open(photos / "captions.csv", "a", encoding="utf-8") as fh:
        fh.write("images/fifo.jpg,a photo that is a pipe\n")
    res = prepare(photos, tmp_path / "data", fifos=[fifo])
    assert res.exit_code == 0, res.output
    reasons = rejected(tmp_path / "data")
    assert "named pipe (FIFO)" in reasons["images/fifo.jpg"]
    assert_accounted(tmp_path / "data")


def test_a_fifo_in_a_class_folder_and_as_a_sidecar_text(tmp_path):
    folders = tmp_path / "folders"
    for label in ("crack", "dent"):
        src = make_photos(tmp_path / f"src_{label}", n=4)
        shutil.copytree(src, folders / label, ignore=shutil.ignore_patterns("*.csv"))
    fifo = make_fifo(folders / "crack" / "pipe.png")
    res = prepare(folders, tmp_path / "d1", fifos=[fifo])
    assert res.exit_code == 0, res.output
    assert "named pipe" in rejected(tmp_path / "d1")["crack/pipe.png"]
    assert_accounted(tmp_path / "d1")

    side = tmp_path / "side"
    shutil.copytree(make_photos(tmp_path / "src_side", n=4), side, ignore=shutil.ignore_patterns("*.csv"))
    for i in range(1, 4):
        (side / f"p{i:02d}.txt").write_text(f"a mark number {i}\n")
    txt = make_fifo(side / "p00.txt")
    res = prepare(side, tmp_path / "d2", fifos=[txt])
    assert res.exit_code == 0, res.output
    reasons = rejected(tmp_path / "d2")
    assert "named pipe" in reasons["p00.txt"] and "p00.png" in reasons
    assert_accounted(tmp_path / "d2")


@pytest.mark.parametrize("kind", ["fifo", "link-outside"])
def test_a_captions_table_that_cannot_be_used_stops_prepare(kind, tmp_path):
    photos = make_photos(tmp_path / "photos", n=4)
    (photos / "sub").mkdir()
    shutil.move(photos / "p00.png", photos / "sub" / "p00.png")  # a class folder: the shape prepare fell back to
    table = photos / "captions.csv"
    if kind == "fifo":
        table.unlink()
        make_fifo(table)
    else:
        outside = tmp_path / "elsewhere.csv"
        shutil.move(table, outside)
        table.symlink_to(outside)
    res = prepare(photos, tmp_path / "data", fifos=[table] if kind == "fifo" else [])
    assert res.exit_code == 3, res.output
    assert "the captions table captions.csv" in flat(res) and "cannot be used" in flat(res)
    assert not (tmp_path / "data" / "dataset.json").exists()


def test_nfc_and_nfd_twins_are_both_accounted_for(tmp_path):
    photos = make_photos(tmp_path / "photos", n=4)
    nfc, nfd = (unicodedata.normalize(f, "café.png") for f in ("NFC", "NFD"))
    shutil.copy(photos / "p00.png", photos / nfc)
    shutil.copy(photos / "p01.png", photos / nfd)
    with open(photos / "captions.csv", "a", encoding="utf-8") as fh:
        fh.write(f"{nfc},a cup of coffee\n")
    res = prepare(photos, tmp_path / "data")
    assert res.exit_code == 0, res.output
    reasons = rejected(tmp_path / "data")
    assert "same name as 'café.png' once Unicode-normalised" in reasons[nfd]
    assert "files do not add up" not in res.output
    assert_accounted(tmp_path / "data")


def test_a_file_name_that_is_not_utf8(tmp_path):
    photos = make_photos(tmp_path / "photos", n=4)
    with open(bytes(photos) + b"/\xff\xfe.png", "wb") as fh:
        fh.write((photos / "p00.png").read_bytes())
    os.mkdir(bytes(photos) + b"/bad\xff")
    res = prepare(photos, tmp_path / "data")
    assert res.exit_code == 0, res.output
    reasons = rejected(tmp_path / "data")
    assert "not valid UTF-8" in reasons["\\xff\\xfe.png"] and "not valid UTF-8" in reasons["bad\\xff"]
    assert_accounted(tmp_path / "data")


def test_a_folder_nested_1900_levels_deep(tmp_path):
    photos = make_photos(tmp_path / "photos", n=4)
    levels = [str(photos) + "/d" * (i + 1) for i in range(1900)]  # made and removed level by level: Python's own
    for level in levels:                                         # recursive helpers would fail at this depth
        os.mkdir(level)
    try:
        res = prepare(photos, tmp_path / "data")
    finally:
        for level in reversed(levels):
            os.rmdir(level)
    assert res.exit_code == 0, res.output
    reasons = rejected(tmp_path / "data")
    assert any("nested more than 64 levels" in why for why in reasons.values()), reasons
    assert_accounted(tmp_path / "data")


@pytest.mark.slow  # a real subprocess or several commands: seconds
def test_an_unreadable_sub_folder(tmp_path):
    photos = make_photos(tmp_path / "photos", n=4)
    locked = photos / "locked"
    locked.mkdir()
    shutil.copy(photos / "p00.png", locked / "x.png")
    (photos / "closed").mkdir()  # no search permission: even its dataset.json cannot be looked for
    locked.chmod(0o000)
    (photos / "closed").chmod(0o600)
    try:
        cmd = without_root_powers([sys.executable, "-m", "mwa_cli", "prepare", str(photos), "--out",
                                   str(tmp_path / "data"), "--image-size", "32"])
        done = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"),
                              capture_output=True, text=True, timeout=240, cwd=str(REPO))
    finally:
        locked.chmod(0o755)
        (photos / "closed").chmod(0o755)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "internal error" not in done.stderr
    reasons = rejected(tmp_path / "data")
    assert "folder cannot be read (Permission denied)" in reasons["locked"]
    assert_accounted(tmp_path / "data")


def test_index_and_search_refuse_special_files(tmp_path):
    from tests.unit.search.test_index import _make_run

    run = _make_run(tmp_path / "run")
    photos = make_photos(tmp_path / "photos", n=3)
    fifo = make_fifo(photos / "pipe.png")
    res = finishes_within(LIMIT_S, lambda: runner.invoke(app, ["index", str(photos), "--adapter", str(run),
                                                               "--out", str(tmp_path / "idx"), "--device", "cpu"]),
                          [fifo])
    assert res.exit_code == 0, res.output
    reasons = dict(pd.read_csv(tmp_path / "idx" / "rejected.csv", dtype=str, keep_default_na=False)[
        ["path", "reason"]].itertuples(index=False))
    assert "named pipe" in reasons["pipe.png"]
    for query in (fifo, Path("/dev/zero")):
        res = finishes_within(LIMIT_S, lambda q=query: runner.invoke(app, ["search", "--image", str(q), "--index",
                                                                          str(tmp_path / "idx")]), [fifo])
        assert res.exit_code == 3, res.output
        assert "not a regular file" in flat(res) and "internal error" not in res.output
