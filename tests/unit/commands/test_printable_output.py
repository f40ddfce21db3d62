"""Text that came from a file or a file name never reaches the terminal as control characters: `printable` (one
function, mwa_cli/printable.py) replaces them visibly, and every command prints through consoles that apply it.
Real escape bytes in real file names, captions and run files; the CLI's output must hold no ESC, BEL or NUL byte
(no colours under the test runner, so any ESC would be one that came from the data)."""

from __future__ import annotations

import json
import shutil
import unicodedata

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.commands.common import emit_json
from mwa_cli.printable import printable
from tests.helpers.photos import make_photos
from tests.helpers.report_builder import standard_runs
from tests.unit.search.test_index import _make_run, _photo

runner = CliRunner()
TITLE = "\x1b]0;PWNED\x07"  # sets the terminal window's title
CLEAR = "\x1b[2J\x1b[H"  # clears the screen
RAW = ("\x1b", "\x07", "\x00", "\x9b")


def assert_printable(output: str) -> None:
    assert not any(c in output for c in RAW), repr(output[:2000])


@pytest.mark.parametrize("text,shown", [
    (TITLE + ".jpg", "\\x1b]0;PWNED\\x07.jpg"),
    (CLEAR + "clear.jpg", "\\x1b[2J\\x1b[Hclear.jpg"),
    ("a\x00b", "a\\x00b"),
    ("line\nbreak", "line\\nbreak"),
    ("\u202eevil\u202c", "\\u202eevil\\u202c"),
    ("\x9b31m", "\\x9b31m"),
    ("\udcff\udcfe.jpg", "\\xff\\xfe.jpg"),  # a file name that was not UTF-8 (surrogate escape)
    ("右上の傷 café　ok", "右上の傷 café　ok"),  # Japanese, accents, the ideographic space: kept
])
def test_printable(text, shown):
    assert printable(text) == shown


def test_printable_keeps_line_breaks_of_messages():
    assert printable("one\ntwo\x1b", newlines=True) == "one\ntwo\\x1b"


def test_json_output_escapes_what_a_terminal_would_act_on(capsys):
    value = {"path": TITLE + "\x9b\u202e\udcff.jpg"}
    emit_json(value)
    out = capsys.readouterr().out
    assert_printable(out)
    assert "\u202e" not in out
    assert json.loads(out) == value  # the same text for a program


@pytest.fixture(scope="module")
def hostile_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("printable")
    run = _make_run(root / "run")
    photos = root / "photos"
    _photo(photos / (TITLE + ".png"), 1)
    _photo(photos / (CLEAR + "clear.png"), 2)
    _photo(photos / "plain.png", 3)
    res = runner.invoke(app, ["index", str(photos), "--adapter", str(run), "--out", str(root / "idx"),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert_printable(res.output)
    return root


def test_search_results_with_escape_sequences_in_file_names(hostile_index):
    res = runner.invoke(app, ["search", "a mark", "--index", str(hostile_index / "idx"), "--top", "3"],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert_printable(res.output)
    assert "\\x1b]0;PWNED" in res.output and "\\x1b[2J\\x1b[Hclear.png" in res.output


def test_a_caption_with_a_nul_is_printed_safely(tmp_path, hostile_index):
    photos = make_photos(tmp_path / "photos", n=6)
    table = photos / "captions.csv"
    table.write_text(table.read_text().replace("a red mark number 0", "a red\x00mark " + CLEAR + "number 0"))
    res = runner.invoke(app, ["prepare", str(photos), "--out", str(tmp_path / "data"), "--image-size", "32"])
    assert res.exit_code == 0, res.output
    idx = tmp_path / "idx"
    res = runner.invoke(app, ["index", str(photos), "--adapter", str(hostile_index / "run"), "--out", str(idx),
                              "--captions", str(tmp_path / "data"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["search", "--image", str(photos / "p00.png"), "--index", str(idx), "--top", "6"],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert_printable(res.output)
    assert "a red\\x00mark \\x1b[2J\\x1b[Hnumber 0" in res.output


def test_show_and_runs_with_escape_sequences_in_run_files(tmp_path):
    _, runs = standard_runs(tmp_path, with_full_ft=False)
    cfg_path = runs / "mwa" / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(method="mwa" + TITLE, backbone=CLEAR + "beit3-mini", command="mwa train [bold]x[/] " + TITLE)
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    timing = json.loads((runs / "mwa" / "timing.json").read_text())
    timing["device_name"] = CLEAR + "GPU"
    (runs / "mwa" / "timing.json").write_text(json.dumps(timing))
    shutil.copytree(runs / "lora", runs / (TITLE + "lora"))
    for args in (["show", str(runs / "mwa")], ["runs", str(runs)]):
        res = runner.invoke(app, args, terminal_width=200)
        assert res.exit_code == 0, res.output
        assert_printable(res.output)
    res = runner.invoke(app, ["show", str(runs / "mwa")], terminal_width=200)
    assert "\\x1b[2J\\x1b[HGPU" in res.output and "[bold]x[/]" in res.output  # shown, not taken as markup
    res = runner.invoke(app, ["report", "--runs", str(runs), "--out", str(tmp_path / "r.html")], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert_printable(res.output)


def test_prepare_rejected_list_and_errors_with_escape_sequences(tmp_path):
    photos = make_photos(tmp_path / "photos", n=4)
    shutil.copy(photos / "p00.png", photos / (TITLE + ".png"))  # listed in no caption row: rejected, and shown
    nfd = unicodedata.normalize("NFD", "café" + CLEAR + ".png")
    shutil.copy(photos / "p01.png", photos / nfd)
    res = runner.invoke(app, ["prepare", str(photos), "--out", str(tmp_path / "data"), "--image-size", "32"],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert_printable(res.output)
    assert "\\x1b]0;PWNED\\x07.png" in res.output
    res = runner.invoke(app, ["search", "x", "--index", str(tmp_path / (CLEAR + "[red]nowhere"))])
    assert res.exit_code == 3
    assert_printable(res.output)
    assert "\\x1b[2J\\x1b[H[red]nowhere" in res.output
