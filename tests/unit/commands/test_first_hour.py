"""The first hour of a new user: small test splits said to be small, costs said to be assumed, a glossary, progress
with an ETA from the start, clear words after Ctrl-C, `--budget 2 hours`, examples in every --help, and
`mwa prepare`'s messages naming what they are about."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mwa_cli.cli import COMMAND_MODULES, app
from mwa_cli.commands.progress import EtaColumn, TrainProgress, eta_seconds, second_interrupt_message
from mwa_cli.eval.small_split import (
    MIN_EVAL_IMAGES,
    fmt_recalls,
    images_needed,
    split_warnings,
    trivial_recalls,
    trivial_sentence,
)
from mwa_cli.report.api import make_report
from mwa_cli.report.html import render_html
from mwa_cli.train.config import TrainConfig, parse_budget
from mwa_cli.train.loop import train
from tests.helpers.paths import HELPERS, REPO
from tests.helpers.report_builder import make_data_dir, make_run, standard_runs

runner = CliRunner()


def _photos(folder: Path, n: int, *, table: bool = True) -> Path:
    """n small real JPEG photos with a captions.csv (image,caption)."""
    folder.mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(n):
        Image.new("RGB", (24, 24), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(folder / f"p{i:02d}.jpg")
        rows.append(f"p{i:02d}.jpg,a part with mark {i}")
    if table:
        (folder / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


# ---- tiny test splits --------------------------------------------------------------------------------------------
def test_prepare_warns_when_val_and_test_are_too_small_and_says_how_many_photos(tmp_path):
    photos = _photos(tmp_path / "photos", 40)
    res = runner.invoke(app, ["prepare", str(photos), "--out", str(tmp_path / "data"), "--image-size", "16"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"the test split has only 4 image(s), fewer than {MIN_EVAL_IMAGES}" in text
    assert "the val split has only 4 image(s)" in text
    assert "about 300 photos in all" in text  # 30 at the default 10 % share


def test_split_warning_numbers():
    assert images_needed(0.1) == 300 and images_needed(0.2) == 150 and images_needed(0.15) == 200
    assert split_warnings({"val": {"images": 30}, "test": {"images": 44}}, (0.8, 0.1, 0.1)) == []
    (only,) = split_warnings({"val": {"images": 30}, "test": {"images": 29}}, None)
    assert only.startswith("warning: the test split has only 29 image(s)") and "--split" not in only


def test_recalls_true_by_construction_are_marked():
    ev = {"n_images": 4, "n_captions": 12, "i2t": {"r1": 50.0, "r5": 100.0, "r10": 100.0},
          "t2i": {"r1": 25.0, "r5": 100.0, "r10": 100.0}}
    assert trivial_recalls(ev) == {"i2t": [], "t2i": [5, 10]}
    assert fmt_recalls(ev["t2i"], [5, 10]) == "25.00 / 100.00† / 100.00†"
    assert trivial_sentence(ev) == "† R@5 and R@10 (text→image) are 100 % by construction: only 4 test images."
    assert trivial_sentence({"n_images": 44, "n_captions": 88}) == ""


def test_report_marks_recalls_and_refuses_a_verdict_on_a_small_test_split(tmp_path):
    _, runs = standard_runs(tmp_path)  # 6 test images, 12 captions
    rep = make_report([], runs, write=False)
    assert "too few to tell MWA from full fine-tuning" in rep["verdict"]
    assert f"at least {MIN_EVAL_IMAGES} test images ({MIN_EVAL_IMAGES - 6} more) are needed" in rep["verdict"]
    assert "is better than" not in rep["verdict"] and "is worse than" not in rep["verdict"]
    html = render_html(rep)
    assert "† T→I R@10: 100 % by construction, only 6 test images to rank." in html
    assert "90.0†" in html  # full-ft's text→image R@10 (R@1 60 + 30 in the fixture)
    res = runner.invoke(app, ["report", "--runs", str(runs)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "100 % by construction, only 6 test images" in " ".join(res.output.split())


def test_a_large_enough_test_split_gets_no_mark_and_a_verdict(tmp_path):
    data = make_data_dir(tmp_path, n_test=MIN_EVAL_IMAGES)
    runs = tmp_path / "runs"
    make_run(runs, "full-ft", "full-ft", data, recall=60.0)
    make_run(runs, "mwa", "mwa", data, recall=40.0)
    rep = make_report([], runs, write=False)
    assert "too few" not in rep["verdict"] and "kept" in rep["verdict"]
    html = render_html(rep)
    assert "help trivial" not in html and not re.search(r"\d†", html)


# ---- costs as assumptions, glossary ----------------------------------------------------------------------------
def test_costs_are_called_assumptions_and_a_cpu_price_a_cpu_hour(tmp_path):
    _, runs = standard_runs(tmp_path, device_type="cpu")
    rep = make_report([], runs, write=False)
    html = render_html(rep)
    assert "Assumed price, not measured: 2.5 USD per CPU-hour" in html and "here a CPU-hour" in html
    assert "Every figure was measured" not in html
    assert "yearly costs multiply the measured times by the assumed price" in html
    assert "Compute / year (assumed price)" in html
    assert "at the assumed price and counts" in rep["verdict"]


def test_glossary_in_the_terminal_and_the_html(tmp_path):
    _, runs = standard_runs(tmp_path)
    plain = runner.invoke(app, ["report", "--runs", str(runs)], env={"COLUMNS": "200"})
    assert "mwa report --explain" in plain.output and "RSUM: The sum of the six recalls" not in plain.output
    res = runner.invoke(app, ["report", "--runs", str(runs), "--explain"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for term in ("R@K:", "RSUM:", "NKE:", "Frozen:", "LoRA:", "MWA:", "Full-FT RSUM kept:", "95 % interval:"):
        assert term in res.output, term
    html = (runs / "report.html").read_text(encoding="utf-8")
    assert "Terms used in this report" in html and "<dt>Full-FT RSUM kept</dt>" in html
    ja = render_html(make_report([], runs, lang="ja", write=False))
    assert "このレポートの用語" in ja and "<dt>RSUM</dt>" in ja


# ---- progress and interruptions ---------------------------------------------------------------------------------
def test_eta_from_the_budget_at_once_and_from_the_step_rate_without_one():
    assert eta_seconds(100.0, 0, None, None, deadline=160.0) == 60.0
    assert eta_seconds(100.0, 1, 100, None, None) is None  # nothing timed yet
    assert eta_seconds(100.0, 10, 100, (90.0, 1), None) == pytest.approx(90 * 10 / 9)


def test_the_progress_bar_shows_the_budget_and_an_eta_from_the_first_moment():
    with TrainProgress(quiet=False) as progress:
        progress("setup", {"run_dir": "runs/x", "method": "mwa", "backbone": "beit3-mini", "device": "cpu",
                           "precision": "fp32", "batch_size": 32, "micro_batch": 32, "train_pairs": 10,
                           "trainable_params": 1, "total_params": 10, "budget_s": parse_budget("2 hours"),
                           "budget_left_s": 7190.0, "total_steps": None})
        eta = EtaColumn().render(progress._task()).plain
    assert re.fullmatch(r"ETA ≤ 1:59:[45]\d", eta), eta


def test_budget_written_in_words_is_read_as_such_and_echoed(tmp_path, capsys):
    assert parse_budget("2 hours") == parse_budget("2hours") == parse_budget("2h") == 7200
    with TrainProgress(quiet=False) as progress:
        progress("setup", {"run_dir": "runs/x", "method": "mwa", "backbone": "b", "device": "cpu",
                           "precision": "fp32", "batch_size": 1, "micro_batch": 1, "train_pairs": 1,
                           "trainable_params": 1, "total_params": 1, "budget_s": parse_budget("2hours"),
                           "budget_left_s": None, "total_steps": None})
    assert "budget 2 h 00 min for the whole run" in capsys.readouterr().err


def test_a_photo_decoding_pass_before_the_run_gets_its_own_bar(tmp_path, capsys):
    """setup.images_progress turns the data layer's (done, total) into "images" events; TrainProgress draws them."""
    from mwa_cli.train.setup import images_progress

    with TrainProgress(quiet=False) as progress:
        report = images_progress(progress, "caching 32px images")
        for done in range(4):
            report(done, 3)
    err = capsys.readouterr().err
    assert "caching 32px images" in err and "3/3" in err and "done" in err
    assert images_progress(None, "caching 32px images") is None
    with TrainProgress(quiet=True) as quiet:
        images_progress(quiet, "caching 32px images")(0, 3)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args", [["data", "--budget", "2", "hours"], ["--budget", "2", "hours", "data"]])
def test_unquoted_budget_says_write_2h_or_quote_it(tmp_path, args):
    res = runner.invoke(app, ["train", *args])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "the shell passed the budget as two words" in text and "--budget 2h" in text and '"2 hours"' in text
    other = runner.invoke(app, ["train", "data", "stray"])
    assert other.exit_code == 2 and "unexpected extra argument(s): stray" in other.output
    demo = runner.invoke(app, ["demo", "--steps-per-method", "30", "s", "--out", str(tmp_path / "d")])
    assert demo.exit_code == 2 and "unexpected extra argument(s): s" in demo.output and not (tmp_path / "d").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_ctrl_c_during_warm_up_says_so(train_data_dir, train_tokenizer, tmp_path):
    sent = []

    def progress(event, data):
        if event == "step" and not sent:  # step 1: the budget's warm-up measurement is still running
            sent.append(data["step"])
            os.kill(os.getpid(), signal.SIGINT)

    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(tmp_path), name="warm", method="mwa", budget="120s", batch_size=8, workers=0,
                      log_every=1, seed=0)
    result = train(cfg, progress)
    assert result.status == "interrupted" and sent == [1]
    assert "stopped during warm-up (step 1), before the step plan was made" in result.message
    assert " of 0" not in result.message and "--resume" in result.message


def test_second_interrupt_words(tmp_path):
    assert "before the run folder was made" in second_interrupt_message(None)[0]
    message, hint = second_interrupt_message(tmp_path)
    assert "has none yet" in message and "start over" in hint
    last = tmp_path / "checkpoint" / "last"
    last.mkdir(parents=True)
    (last / "state.pt").write_bytes(b"x")
    (last / "meta.json").write_text(json.dumps({"step": 5}))
    message, hint = second_interrupt_message(tmp_path)
    assert "the last checkpoint (step 5)" in message and hint == f"resume from it with: mwa train --resume {tmp_path}"


@pytest.mark.slow
def test_a_double_ctrl_c_names_the_last_checkpoint_and_the_resume_command(train_data_dir, train_tokenizer, tmp_path):
    """A real `mwa train` process: two SIGINTs in a row stop it at once; it says what can be resumed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{HELPERS}",
               FAULT_SPEC=json.dumps({"step_delay": 0.5}))
    args = [sys.executable, "-m", "fault_mwa", "train", str(train_data_dir), "--backbone", "beit3-tiny-test",
            "--tokenizer", str(train_tokenizer), "--out", str(tmp_path), "--name", "double", "--method", "mwa",
            "--steps", "200", "--batch-size", "8", "--checkpoint-every", "3", "--val-evals", "0", "--workers", "0"]
    proc = subprocess.Popen(args, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    meta = tmp_path / "double" / "checkpoint" / "last" / "meta.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not meta.is_file():
        time.sleep(0.05)
    assert meta.is_file(), "no checkpoint was written"
    time.sleep(0.2)  # inside a later step's 0.5 s
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    text = " ".join(err.split())
    assert proc.returncode == 130, text
    step = json.loads(meta.read_text())["step"]
    assert f"stopped at once (second Ctrl-C) without writing a new checkpoint; the last checkpoint (step {step})" in text
    assert f"mwa train --resume {tmp_path / 'double'}" in text
    assert "Traceback" not in err and text != "interrupted"


# ---- help and prepare's messages --------------------------------------------------------------------------------
def test_every_command_shows_examples_in_its_help():
    commands = [[c.name or c.callback.__name__] for c in app.registered_commands]
    for group in app.registered_groups:
        sub = group.typer_instance.registered_commands
        commands += [[group.name, c.name or c.callback.__name__] for c in sub]
    top = {words[0] for words in commands}
    assert {"runs", "show", "line", "settings"} <= top and len(top) >= len(COMMAND_MODULES)
    for words in commands:
        res = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "120"})
        assert res.exit_code == 0 and "Examples" in res.output, words


def test_wrong_column_lists_every_accepted_name(tmp_path):
    from mwa_cli.data.ingest import CAPTION_COLUMNS, IMAGE_COLUMNS, LABEL_COLUMNS

    photos = _photos(tmp_path / "photos", 3, table=False)
    (photos / "captions.csv").write_text("picture,words\np00.jpg,a part\n", encoding="utf-8")
    res = runner.invoke(app, ["prepare", str(photos), "--out", str(tmp_path / "data")], env={"COLUMNS": "300"})
    assert res.exit_code == 3
    text = " ".join(res.output.split())
    for name in (*IMAGE_COLUMNS, *CAPTION_COLUMNS, *LABEL_COLUMNS):
        assert name in text, name


def test_rejected_photos_are_named(tmp_path):
    photos = _photos(tmp_path / "photos", 12)
    with open(photos / "captions.csv", "a", encoding="utf-8") as f:
        f.write("gone.jpg,a photo that is not there\n")
    res = runner.invoke(app, ["prepare", str(photos), "--out", str(tmp_path / "data"), "--image-size", "16"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "not found in the photos folder: gone.jpg (row 14)" in " ".join(res.output.split())


def test_the_sample_data_hint_works_from_any_folder(tmp_path):
    from mwa_cli.data.ingest import SAMPLE_DATA

    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["prepare", str(empty), "--out", str(tmp_path / "data")], env={"COLUMNS": "400"})
    assert res.exit_code == 3
    assert f"mwa prepare {SAMPLE_DATA}" in " ".join(res.output.split())
    assert SAMPLE_DATA.is_absolute() and (SAMPLE_DATA / "captions.csv").is_file()
