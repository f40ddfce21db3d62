"""What mwa does not trust (docs/security.md): a command recorded in a run folder is never offered as something to
run (rebuilt from checked fields and shell-quoted instead); only documented environment variables change
behaviour; long texts are cut with one warning and long queries echoed short; an image cache cut short while a run
reads it ends with a message, not a "Bus error"."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from tests.helpers.paths import HELPERS, REPO
from tests.helpers.report_builder import standard_runs

runner = CliRunner()
PAYLOAD = "$(touch X) ; rm -rf ~/important --method full-ft"


def flat(res) -> str:
    return " ".join(res.output.split())


def test_a_recorded_command_is_never_offered_to_run(tmp_path):
    _, runs = standard_runs(tmp_path, with_full_ft=False)
    mwa = runs / "mwa"
    cfg = json.loads((mwa / "config.json").read_text(encoding="utf-8"))
    cfg["command"] = f"mwa train data --method mwa {PAYLOAD}"
    cfg["data_dir"] = f"data {PAYLOAD}"  # the fields the command is rebuilt from are the run's too
    cfg["budget"] = f"1h {PAYLOAD}"
    (mwa / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    html = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "--runs", str(runs), "--out", str(html)], terminal_width=400)
    assert res.exit_code == 0, res.output
    panel = " ".join(line.strip(" │╭╮╰╯─") for line in res.output.splitlines())  # the hint panel, unwrapped
    suggested = re.search(r"again: (mwa train .*?) Or add", panel)
    page = html.read_text(encoding="utf-8")
    shown = re.findall(r"<code>(mwa train[^<]*)</code>", page)
    assert suggested and shown, res.output
    for cmd in [suggested.group(1), html_lib.unescape(shown[0])]:
        argv = shlex.split(cmd)
        assert argv[:2] == ["mwa", "train"] and argv[argv.index("--method") + 1] == "full-ft"
        assert "--budget" not in argv  # "1h $(touch X) ..." is no budget: left out
        # pasted into a shell, with `mwa` standing for a program that only prints its arguments: nothing runs
        home = tmp_path / "home"
        (home / "important").mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["bash", "-c", "mwa() { printf '%s\\n' \"$@\"; }; " + cmd], cwd=tmp_path,
                              env=dict(os.environ, HOME=str(home)), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and done.stdout.splitlines() == argv[1:]
        assert not (tmp_path / "X").exists() and (home / "important").is_dir()
    # the recorded command itself appears only as data, under a heading that says so (autoescaped)
    assert "Command recorded in config.json" in page and html_lib.escape(cfg["command"]) in page
    assert len(shown) == 1


DOCUMENTED = re.compile(r"^\| `([A-Z_][A-Z0-9_]*)` \|", re.M)
READ = [re.compile(r"""os\.environ(?:\.get)?[\[(]\s*["']([A-Z_][A-Z0-9_]*)["']"""),
        re.compile(r"""["']([A-Z_][A-Z0-9_]*)["']\s+(?:not\s+)?in\s+os\.environ"""),
        re.compile(r"""os\.getenv\(\s*["']([A-Z_][A-Z0-9_]*)["']"""),
        re.compile(r"""^ENV_[A-Z0-9_]+\s*=\s*["']([A-Z_][A-Z0-9_]*)["']""", re.M)]


def test_only_documented_environment_variables_are_read():
    documented = set(DOCUMENTED.findall((REPO / "docs" / "security.md").read_text(encoding="utf-8")))
    read: dict[str, str] = {}
    for path in (REPO / "mwa_cli").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in READ:
            for name in pattern.findall(text):
                read.setdefault(name, str(path.relative_to(REPO)))
    assert read, "the patterns found no variable at all: they are broken"
    undocumented = {n: p for n, p in read.items() if n not in documented}
    assert not undocumented, f"read but not listed in docs/security.md: {undocumented}"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    from tests.helpers.photos import make_photos
    from tests.unit.search.test_index import _make_run

    root = tmp_path_factory.mktemp("untrusted")
    run = _make_run(root / "run")
    res = runner.invoke(app, ["index", str(make_photos(root / "photos", n=3)), "--adapter", str(run), "--out",
                              str(root / "idx"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return root / "idx"


def test_a_long_query_is_cut_with_one_warning_and_echoed_short(index_dir):
    query = "crack near the weld " * 6000  # 120 KB
    res = runner.invoke(app, ["search", query, "--index", str(index_dir)], terminal_width=100)
    assert res.exit_code == 0, res.output[-2000:]
    assert len(res.output.splitlines()) < 30, len(res.output.splitlines())
    assert flat(res).count("texts cut to the model's text length: 1 longer than 32 tokens") == 1
    assert "(120,000 characters)" in flat(res)
    res = runner.invoke(app, ["search", query, "--index", str(index_dir), "--json"])
    out = json.loads(res.stdout)
    assert out["query"]["text"] == query and any("cut to the model's text length" in w for w in out["warnings"])
    res = runner.invoke(app, ["search", "a red mark", "--index", str(index_dir)])
    assert "cut to" not in flat(res)  # a short query: no warning


def test_long_captions_are_cut_with_one_warning_per_command(train_data_dir, train_tokenizer, tmp_path):
    res = runner.invoke(app, ["train", str(train_data_dir), "--backbone", "beit3-tiny-test", "--tokenizer",
                              str(train_tokenizer), "--out", str(tmp_path), "--name", "w", "--steps", "2",
                              "--batch-size", "8", "--val-evals", "1", "--workers", "0", "--device", "cpu",
                              "--quiet"])
    assert res.exit_code == 0, res.output
    # the train, val and test captions were encoded several times (train, checks, final evaluation): one line
    assert flat(res).count("texts cut to the model's text length") == 1
    n = int(re.search(r"text length: (\d+) longer than 32 tokens", flat(res)).group(1))
    import pandas as pd

    from mwa_cli.models.run_tokenizer import load_tokenizer

    tok = load_tokenizer(str(train_tokenizer), 32)
    captions = pd.read_csv(train_data_dir / "manifest.csv")["caption"]
    assert n == sum(len(tok.encode(c)) > 30 for c in set(captions))


@pytest.mark.slow
def test_an_image_cache_cut_short_during_training_is_a_message(train_data_dir, train_tokenizer, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(train_data_dir, data)
    u8 = data / "cache" / "images_32.u8"
    args = [sys.executable, "-m", "fault_mwa", "train", str(data), "--backbone", "beit3-tiny-test", "--tokenizer",
            str(train_tokenizer), "--out", str(tmp_path / "runs"), "--name", "t", "--steps", "400", "--batch-size",
            "8", "--val-evals", "0", "--workers", "0", "--device", "cpu", "--checkpoint-every", "2", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{HELPERS}",
               FAULT_SPEC=json.dumps({"step_delay": 0.2}))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "runs" / "t" / "checkpoint" / "last").is_dir():
        time.sleep(0.1)
    os.truncate(u8, u8.stat().st_size // 3)  # as a full disk or another program would leave it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (proc.returncode, err[-2000:])  # not -7 / 135 (SIGBUS)
    assert "images_32.u8 has" in err and "truncated" in err and "mwa train --resume" in err
    assert "Traceback" not in err
