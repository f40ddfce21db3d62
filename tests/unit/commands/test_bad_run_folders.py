"""Damaged or hand-edited files and full disks end in a clear message with a documented exit code, never
"internal error … please report this"; `mwa report` over a folder holding such runs still reports the good ones.
One case per test (parametrized). The full disk is a file object whose writes fail with ENOSPC, as a full disk's do.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mwa_cli import fileio
from mwa_cli.cli import app
from mwa_cli.errors import EXIT_NO_SPACE
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train
from tests.helpers.paths import REPO
from tests.helpers.photos import make_photos

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flat(res) -> str:
    return " ".join(res.output.split())


def assert_clear(res, code: int, *words: str) -> None:
    out = flat(res)
    assert res.exit_code == code, out
    assert "internal error" not in out and "Traceback" not in out, out
    for w in words:
        assert w in out, out


def _args(data, tok, out, name, *extra) -> list[str]:
    return ["train", str(data), "--backbone", "beit3-tiny-test", "--tokenizer", str(tok), "--out", str(out),
            "--name", name, "--batch-size", "8", "--seed", "0", "--val-evals", "0", "--workers", "0",
            "--device", "cpu", "--quiet", *extra]


@pytest.fixture(scope="module")
def good_run(train_data_dir, train_tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad_runs")
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(out), name="good", steps=4, batch_size=8, lr=1e-3, seed=0, checkpoint_every=2,
                      val_evals=0, workers=0)
    assert train(cfg).exit_code == 0
    return out / "good"


def _json_edit(key: str, value):
    def edit(run: Path) -> None:
        name, field = key.split(":")
        data = json.loads((run / name).read_text(encoding="utf-8"))
        data[field] = value
        (run / name).write_text(json.dumps(data), encoding="utf-8")
    return edit


def _write(name: str, text: str):
    return lambda run: (run / name).write_text(text, encoding="utf-8")


# (case, how the run folder is damaged, what `mwa report RUN` says: None = it still reports it)
REPORT_CASES = [
    ("eval-null", _write("eval.json", "null"), "eval.json holds NoneType"),
    ("config-list", _write("config.json", "[1,2,3]"), "config.json holds list"),
    ("timing-1e308", _json_edit("timing.json:wall_s", 1e308), "timing.json is not what mwa writes: wall_s is 1e+308"),
    ("eval-1e308", _json_edit("eval.json:rsum", 1e308), "eval.json is not what mwa writes: rsum is 1e+308"),
    ("topk-garbage", _write("eval_topk.json", "garbage{{"), "eval_topk.json is not valid JSON"),
    ("ranks-garbage", _write("eval_ranks.json", "[[["), None),
    ("steps-abc", _json_edit("config.json:steps", "abc"), None),
]


@pytest.mark.parametrize("case,damage,message", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_report_over_a_damaged_run(case, damage, message, good_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(good_run, runs / "good")
    shutil.copytree(good_run, runs / case)
    damage(runs / case)
    res = runner.invoke(app, ["report", str(runs / case), "--out", str(tmp_path / "one.html")])
    if message is None:
        assert_clear(res, 0)
    else:
        assert_clear(res, 2, message, "hint:")
    res = runner.invoke(app, ["report", "--runs", str(runs), "--out", str(tmp_path / "all.html")])
    assert_clear(res, 0)
    html = (tmp_path / "all.html").read_text(encoding="utf-8")
    assert "good" in html
    if message is not None:
        assert "Skipped" in flat(res) and case in "".join(flat(res).split())  # a long path may wrap mid-name


RESUME_CASES = [
    ("config-list", _write("config.json", "[1,2,3]"), "config.json holds list"),
    ("steps-abc", _json_edit("config.json:steps", "abc"), "steps in"),
    ("steps-1e308", _json_edit("config.json:steps", 1e308), "steps in"),
    ("config-garbage", _write("config.json", "{{"), "cannot read"),
]


@pytest.mark.parametrize("case,damage,message", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_of_a_damaged_config(case, damage, message, good_run, tmp_path):
    run = tmp_path / "runs" / case
    shutil.copytree(good_run, run, ignore=shutil.ignore_patterns(".lock"))
    (run / "eval.json").unlink()
    damage(run)
    res = runner.invoke(app, ["train", "--resume", str(run), "--quiet"])
    assert_clear(res, 2, message, "hint:")


@pytest.mark.parametrize("text,message", [('{"steps": "abc"}', "steps in"), ('{"steps": 1e308}', "steps in"),
                                          ('{"lr": "fast"}', "lr in"), ("[1,2,3]", "must hold an object"),
                                          ('{"seed": true}', "seed in")])
def test_a_config_file_with_wrong_types(text, message, train_data_dir, train_tokenizer, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(text, encoding="utf-8")
    res = runner.invoke(app, _args(train_data_dir, train_tokenizer, tmp_path / "runs", "x", "--config", str(cfg)))
    assert_clear(res, 2, message)
    assert not (tmp_path / "runs" / "x").exists()


def _index(tmp_path: Path, good_run: Path) -> Path:
    photos = make_photos(tmp_path / "photos", n=4)
    idx = tmp_path / "idx"
    res = runner.invoke(app, ["index", str(photos), "--adapter", str(good_run), "--out", str(idx), "--device",
                              "cpu"])
    assert res.exit_code == 0, flat(res)
    return idx


def _older_index(idx: Path) -> None:
    """As written before hashes were recorded: no "files" in index.json."""
    meta = json.loads((idx / "index.json").read_text(encoding="utf-8"))
    meta.pop("files")
    (idx / "index.json").write_text(json.dumps(meta), encoding="utf-8")


INDEX_CASES = [
    ("index-list", lambda idx: (idx / "index.json").write_text("[]"), 3, "index.json holds list"),
    ("index-null", lambda idx: (idx / "index.json").write_text("null"), 3, "index.json holds NoneType"),
    ("manifest-truncated", lambda idx: (idx / "manifest.csv").write_bytes((idx / "manifest.csv").read_bytes()[:40]),
     6, "manifest.csv is damaged"),
    ("old-manifest-truncated", lambda idx: (_older_index(idx), (idx / "manifest.csv").write_bytes(
        (idx / "manifest.csv").read_bytes()[:40])), 3, "mwa index"),
]


@pytest.mark.parametrize("case,damage,code,message", INDEX_CASES, ids=[c[0] for c in INDEX_CASES])
def test_search_in_a_damaged_index(case, damage, code, message, good_run, tmp_path):
    idx = _index(tmp_path, good_run)
    damage(idx)
    res = runner.invoke(app, ["search", "a red mark", "--index", str(idx)])
    assert_clear(res, code, message)


class _FullDisk:
    """A file whose writes fail with ENOSPC once `room` bytes are written, like a file on a full disk."""

    def __init__(self, raw, room: int):
        self.raw, self.room = raw, room

    def write(self, data: bytes) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.raw.write(data)

    def __getattr__(self, name):
        return getattr(self.raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.raw.close()


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint(train_data_dir, train_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "open", lambda path, mode="r", *a, **k: _FullDisk(open(path, mode, *a, **k), 2000),
                        raising=False)
    res = runner.invoke(app, _args(train_data_dir, train_tokenizer, tmp_path / "runs", "full", "--steps", "4",
                                   "--checkpoint-every", "2"))
    assert_clear(res, EXIT_NO_SPACE, "no space left on the disk", "--resume")
    monkeypatch.undo()
    assert not list((tmp_path / "runs" / "full" / "checkpoint").glob(".tmp-*"))  # the half-written one is removed
    # the same command starts it again (stopped before its first checkpoint); in another process, as after a real
    # failure (this one still holds the failed run's lock)
    again = subprocess.run([sys.executable, "-m", "mwa_cli", *_args(train_data_dir, train_tokenizer, tmp_path / "runs",
                                                                    "full", "--steps", "4")],
                           env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)), capture_output=True,
                           text=True, timeout=300, cwd=str(REPO))
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list((tmp_path / "runs" / "full" / "checkpoint").glob(".tmp-*"))


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_a_full_disk_at_the_start(command, train_data_dir, train_tokenizer, tmp_path, monkeypatch):
    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(fileio, "atomic_write", full)
    if command == "train":
        args = _args(train_data_dir, train_tokenizer, tmp_path / "runs", "s", "--steps", "2")
    else:
        args = ["prepare", str(make_photos(tmp_path / "photos", n=3)), "--out", str(tmp_path / "data")]
    res = runner.invoke(app, args)
    assert_clear(res, EXIT_NO_SPACE, "no space left on the disk")
