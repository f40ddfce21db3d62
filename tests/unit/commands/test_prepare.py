"""`mwa prepare` through the CLI (no tracebacks, exit codes, --json) and the bundled sample_data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from mwa_cli.cli import app
from tests.helpers.paths import REPO

SAMPLE = REPO / "mwa_cli" / "sample_data"
BEIT3_SPM = REPO.parent / "shared" / "tokenizers" / "beit3.spm"


def invoke(*args: str):
    return CliRunner().invoke(app, ["prepare", *args])


def small_set(p: Path) -> Path:
    p.mkdir(parents=True)
    for k, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]):
        Image.new("RGB", (10, 10), c).save(p / f"{k}.png")
    (p / "captions.csv").write_text("image,caption\n" + "".join(f"{k}.png,colour {k}\n" for k in range(4)),
                                    encoding="utf-8")
    return p


def test_help_documents_exit_codes():
    res = invoke("--help")
    assert res.exit_code == 0
    for word in ("Exit codes", "--strict", "--format", "--lang", "--split", "--image-size", "--max-pixels", "--json"):
        assert word in res.output


def test_cli_prepare_and_json(tmp_path):
    p = small_set(tmp_path / "p")
    res = invoke(str(p), "--out", str(tmp_path / "out"), "--image-size", "16", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["counts"]["images"] == 4 and summary["format"] == "table"
    assert summary["report"]["tokenizer_coverage"]["status"] in ("ok", "skipped")
    res = invoke(str(p), "--out", str(tmp_path / "out"), "--image-size", "16")
    assert res.exit_code == 0 and "prepared" in res.output and "4 found = 4 used + 0 rejected" in res.output


@pytest.mark.parametrize("setup,args,code,needle", [
    ("missing", [], 3, "not found"),
    ("empty", [], 3, "no photos found"),
    ("badcols", [], 3, "Columns found"),
    ("ok", ["--split", "1,2"], 2, "--split"),
    ("ok", ["--format", "xml"], 2, "--format"),
    ("ok", ["--lang", "fr"], 2, None),
    ("reject", ["--strict"], 4, "--strict"),
])
def test_cli_bad_input_clear_error_no_traceback(tmp_path, setup, args, code, needle):
    p = tmp_path / "p"
    if setup == "empty":
        p.mkdir()
    elif setup in ("ok", "badcols", "reject"):
        small_set(p)
        if setup == "badcols":
            (p / "captions.csv").write_text("pic,txt\n0.png,x\n", encoding="utf-8")
        if setup == "reject":
            (p / "captions.csv").write_text("image,caption\n0.png,x\nnone.png,y\n", encoding="utf-8")
    if setup == "ok" and args[0] == "--lang":  # class folders use --lang
        (p / "captions.csv").unlink()
    res = invoke(str(p), "--out", str(tmp_path / "out"), "--image-size", "16", *args)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    if needle:
        assert needle in res.output


def test_cli_tokenizer_coverage_with_beit3(tmp_path):
    if not BEIT3_SPM.is_file():
        pytest.skip(f"BEiT-3 tokenizer not found at {BEIT3_SPM} (CI lays ../shared beside the checkout)")
    p = tmp_path / "p"
    p.mkdir()
    Image.new("RGB", (10, 10)).save(p / "a.png")
    (p / "captions.csv").write_text("image,caption\na.png,左上に長い傷がある金属板\na.png,a scratch\n", encoding="utf-8")
    res = invoke(str(p), "--out", str(tmp_path / "out"), "--image-size", "16", "--tokenizer", str(BEIT3_SPM), "--json")
    assert res.exit_code == 0, res.output
    tok = json.loads(res.stdout)["report"]["tokenizer_coverage"]
    assert tok["status"] == "ok" and tok["unknown_tokens"] >= 2 and tok["texts_with_unknown"] == 1
    chars = {c for c, _ in tok["top_unknown_characters"]}
    assert {"傷", "左"} <= chars


def test_tokenizer_missing_is_skipped_with_reason(tmp_path):
    p = small_set(tmp_path / "p")
    res = invoke(str(p), "--out", str(tmp_path / "out"), "--image-size", "16", "--tokenizer", str(tmp_path / "no.spm"))
    assert res.exit_code == 0 and "tokenizer coverage: skipped" in res.output


# ------------------------------------------------------------------------------------------ sample data
def test_sample_data_bundle():
    if not (SAMPLE / "captions.csv").is_file():
        pytest.skip("sample_data not generated (python scripts/make_sample_data.py)")
    df = pd.read_csv(SAMPLE / "captions.csv")
    assert list(df.columns) == ["image", "caption", "label", "lang"]
    n = df["image"].nunique()
    assert 300 <= n <= 600
    per = df.groupby(["image", "lang"]).size().unstack()
    assert (per["en"] >= 2).all() and (per["ja"] >= 2).all()
    total = sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file())
    assert total <= 10 * 1024 * 1024
    assert set(df["label"]) == {"scratch", "crack", "dent", "rust", "hole", "missing_part", "misalignment", "no_defect"}
    assert all((SAMPLE / i).is_file() for i in df["image"].unique()[:20])


def test_sample_generator_deterministic(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_sample_data as g
    finally:
        sys.path.pop(0)
    a, b = g.make_one(3, "crack", 2024), g.make_one(3, "crack", 2024)
    assert a == b
    caps = g.captions("scratch", "metal", 0, "large")
    assert caps[0] == ("en", "a large scratch on the upper left of a brushed metal plate")
    assert caps[2] == ("ja", "左上に大きな傷があるヘアライン金属板")
    if (SAMPLE / "images" / "0003_crack.jpg").is_file():
        assert (SAMPLE / "images" / "0003_crack.jpg").read_bytes() == a[0]


def test_unexpected_error_no_traceback(tmp_path, monkeypatch):
    import mwa_cli.data.prepare as prep

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(prep, "prepare_dataset", boom)
    p = small_set(tmp_path / "p")
    res = invoke(str(p), "--out", str(tmp_path / "out"))
    assert res.exit_code == 1 and "internal error" in res.output and "disk on fire" in res.output
    assert "Traceback" not in res.output


def test_progress_bar_runs(tmp_path, capsys):
    """The data layer's progress callback drawn by the command layer's Rich bar, on stderr."""
    from mwa_cli.commands.progress import count_bar
    from mwa_cli.data.cache import decode_files

    p = small_set(tmp_path / "p")
    files = [(str(f), f.name, None) for f in sorted(p.glob("*.png"))]
    with count_bar("decoding photos", True) as progress:
        res = decode_files(files, 8, tmp_path / "stage.u8", progress=progress, workers=1)
    assert [r["rel"] for r in res] == [f[1] for f in files] and all("image_id" in r for r in res)
    captured = capsys.readouterr()
    assert "decoding photos" in captured.err and "4/4" in captured.err and captured.out == ""
    with count_bar("decoding photos", False) as progress:
        assert progress is None


def test_a_pass_with_nothing_to_decode_draws_no_bar(tmp_path, capsys):
    from mwa_cli.commands.progress import count_bar
    from mwa_cli.data.cache import decode_files

    with count_bar("decoding photos", True) as progress:
        assert decode_files([], 8, tmp_path / "stage.u8", progress=progress, workers=1) == []
    assert "decoding photos" not in capsys.readouterr().err
