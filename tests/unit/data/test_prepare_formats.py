"""mwa prepare: input shapes, captions tables, encodings, path safety, bad rows, accounting."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mwa_cli.data.prepare import prepare_dataset
from mwa_cli.errors import ConfigError, DataError


def img(path: Path, size=(40, 30), fmt=None, seed=None) -> Path:
    """A small distinct image (noise seeded by the file name unless `seed` is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(seed if seed is not None else path.name).encode()))
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, fmt)
    return path


def run(photos: Path, out: Path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    kw.setdefault("image_size", 16)
    return prepare_dataset(photos, out, **kw)


def read(out: Path):
    m = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    r = pd.read_csv(out / "rejected.csv", dtype=str, keep_default_na=False)
    return m, r


def check_adds_up(res, out: Path) -> None:
    f, r = res.counts["files"], res.counts["rows"]
    assert f["used"] + f["rejected"] == f["found"]
    assert r["used"] + r["rejected"] + r["duplicates_merged"] + r["excluded_by_lang"] == r["found"]
    _, rej = read(out)
    assert len(rej) == res.counts["rejected"] == f["rejected"] + r["rejected"]
    assert not res.notes or all("internal check" not in n for n in res.notes)


# ---------------------------------------------------------------------------------------------- shapes
def test_table_csv_auto_detected_with_aliases_and_nested(tmp_path):
    p = tmp_path / "photos"
    img(p / "a.jpg")
    img(p / "sub" / "deep" / "b.png")
    (p / "captions.csv").write_text("File,Description,Class\na.jpg,a scratch,scratch\n"
                                    "a.jpg,\"a long, thin scratch\",scratch\nsub/deep/b.png,a dent,dent\n", encoding="utf-8")
    res = run(p, tmp_path / "out")
    assert res.format == "table"
    m, r = read(tmp_path / "out")
    assert list(m.columns) == ["image_id", "path", "caption", "label", "split", "width", "height"]
    assert len(m) == 3 and m["image_id"].nunique() == 2 and len(r) == 0
    assert set(m["path"]) == {"a.jpg", "sub/deep/b.png"}
    assert "a long, thin scratch" in set(m["caption"])
    assert set(m[m["path"] == "a.jpg"]["label"]) == {"scratch"}
    assert (m["width"] == "40").all() and (m["height"] == "30").all()
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["schema_version"] == 1 and info["format"] == "table" and info["source"] == str(p.resolve())
    assert info["counts"]["images"] == 2 and info["counts"]["captions"] == 3
    assert len(info["dataset_hash"]) == 64
    check_adds_up(res, tmp_path / "out")


def test_table_tsv_and_jsonl(tmp_path):
    p = tmp_path / "tsv"
    img(p / "a.jpg")
    (p / "captions.tsv").write_text("path\ttext\na.jpg\tone, two\n", encoding="utf-8")
    assert run(p, tmp_path / "o1").format == "table"
    assert read(tmp_path / "o1")[0]["caption"].tolist() == ["one, two"]

    q = tmp_path / "jsonl"
    img(q / "a.jpg")
    img(q / "b.jpg")
    (q / "captions.jsonl").write_text(
        '{"image": "a.jpg", "caption": "first"}\n\n{"image": "b.jpg", "caption": ["x", "y"], "label": "L"}\n'
        "not json\n[1, 2]\n", encoding="utf-8")
    res = run(q, tmp_path / "o2")
    m, r = read(tmp_path / "o2")
    assert sorted(m["caption"]) == ["first", "x", "y"]
    assert sorted(r["row"]) == ["4", "5"]
    assert any("not valid JSON" in x for x in r["reason"])
    check_adds_up(res, tmp_path / "o2")


def test_sidecar_auto_and_orphans(tmp_path):
    p = tmp_path / "p"
    img(p / "a.jpg")
    (p / "a.txt").write_text("first caption\n\n   \nsecond caption\n", encoding="utf-8")
    img(p / "b.jpg")  # no caption file
    (p / "c.txt").write_text("orphan", encoding="utf-8")
    img(p / "d.jpg")
    (p / "d.txt").write_text("  \n", encoding="utf-8")
    res = run(p, tmp_path / "out")
    assert res.format == "sidecar"
    m, r = read(tmp_path / "out")
    assert m["caption"].tolist() == ["first caption", "second caption"]
    reasons = dict(zip(r["path"], r["reason"]))
    assert "no caption file" in reasons["b.jpg"]
    assert "no image with the same name" in reasons["c.txt"]
    assert "empty" in reasons["d.txt"]
    check_adds_up(res, tmp_path / "out")


@pytest.mark.parametrize("lang,expect", [("en", {"en"}), ("ja", {"ja"}), ("both", {"en", "ja"})])
def test_class_folders_templates(tmp_path, lang, expect):
    p = tmp_path / "p"
    for k in range(3):
        img(p / "scratch" / f"s{k}.jpg")
        img(p / "no_defect" / "nested" / f"g{k}.jpg")
    img(p / "stray.jpg")  # not in a class folder
    res = run(p, tmp_path / "out", lang=lang)
    assert res.format == "folders"
    m, r = read(tmp_path / "out")
    assert set(m["label"]) == {"scratch", "no_defect"}
    has_ja = m["caption"].str.contains("傷").any()
    has_en = m["caption"].str.contains("scratch").any()
    assert {"ja"} <= expect or not has_ja
    assert ("ja" in expect) == has_ja and ("en" in expect) == has_en
    assert r["path"].tolist() == ["stray.jpg"] and "class folder" in r["reason"][0]
    check_adds_up(res, tmp_path / "out")


def test_user_template_file(tmp_path):
    p = tmp_path / "p"
    img(p / "crack" / "a.jpg")
    t = tmp_path / "t.txt"
    t.write_text("# comment\nphoto with {label}\nja: {label}の写真\n", encoding="utf-8")
    run(p, tmp_path / "out", templates=t)
    assert sorted(read(tmp_path / "out")[0]["caption"]) == ["photo with crack", "ひび割れの写真"]
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="label"):
        run(p, tmp_path / "out2", templates=bad)


def test_forced_format_and_mismatch(tmp_path):
    p = tmp_path / "p"
    img(p / "cls" / "a.jpg")
    (p / "cls" / "a.txt").write_text("sidecar caption", encoding="utf-8")
    assert run(p, tmp_path / "o1").format == "sidecar"          # auto: sidecar before folders
    res = run(p, tmp_path / "o2", fmt="folders")
    assert res.format == "folders"
    m, r = read(tmp_path / "o2")
    assert set(m["label"]) == {"cls"} and "text file not used" in r["reason"][0]
    with pytest.raises(DataError, match="no captions.csv"):
        run(p, tmp_path / "o3", fmt="table")


def test_table_lang_column_filter(tmp_path):
    p = tmp_path / "p"
    img(p / "a.jpg")
    (p / "captions.csv").write_text("image,caption,lang\na.jpg,hello,en\na.jpg,こんにちは,ja\n", encoding="utf-8")
    res = run(p, tmp_path / "out", lang="ja")
    assert read(tmp_path / "out")[0]["caption"].tolist() == ["こんにちは"]
    assert res.counts["rows"]["excluded_by_lang"] == 1
    check_adds_up(res, tmp_path / "out")


# ------------------------------------------------------------------------------------------ encodings
def test_unicode_names_and_bom(tmp_path):
    p = tmp_path / "写真"
    img(p / "傷" / "左上.jpg")
    (p / "captions.csv").write_bytes("\ufeffimage,caption\n傷/左上.jpg,左上に長い傷がある金属板\n".encode("utf-8"))
    res = run(p, tmp_path / "out")
    m, _ = read(tmp_path / "out")
    assert m["path"].tolist() == ["傷/左上.jpg"] and m["caption"].tolist() == ["左上に長い傷がある金属板"]
    assert res.counts["rejected"] == 0


def test_shift_jis_detected(tmp_path):
    p = tmp_path / "p"
    img(p / "a.jpg")
    (p / "captions.csv").write_bytes("image,caption\na.jpg,左上に傷\n".encode("shift_jis"))
    res = run(p, tmp_path / "out")
    assert read(tmp_path / "out")[0]["caption"].tolist() == ["左上に傷"]
    assert any("Shift_JIS" in n for n in res.notes)


def test_mixed_encoding_reported_clearly(tmp_path):
    p = tmp_path / "p"
    img(p / "a.jpg")
    (p / "captions.csv").write_bytes("image,caption\na.jpg,左上に傷\n".encode("utf-8") + "a.jpg,右下\x80の穴\n".encode("shift_jis", "ignore") + b"\xff\xfe\x80\n")
    with pytest.raises(DataError) as e:
        run(p, tmp_path / "out")
    assert "mixes text encodings" in e.value.message and "line 2 is UTF-8 but line 3" in e.value.message
    assert "save it as UTF-8" in e.value.hint
    (p / "captions.csv").write_bytes(b"image,caption\na.jpg,\x80\xff\n")
    with pytest.raises(DataError, match="not Shift_JIS either"):
        run(p, tmp_path / "out")


def test_unknown_columns_message(tmp_path):
    p = tmp_path / "p"
    img(p / "a.jpg")
    (p / "captions.csv").write_text("picture,words\na.jpg,hello\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        run(p, tmp_path / "out")
    msg = e.value.message
    assert "picture" in msg and "words" in msg and "image" in msg and "caption" in msg
    assert e.value.exit_code == 3


# -------------------------------------------------------------------------------------- path safety
def test_paths_escaping_refused_and_missing_files(tmp_path):
    p = tmp_path / "p"
    img(p / "a.jpg")
    img(p / "Case.jpg")
    outside = img(tmp_path / "secret.jpg")
    (p / "link.jpg").symlink_to(outside)
    (p / "inlink.jpg").symlink_to(p / "a.jpg")
    (p / "captions.csv").write_text(
        "image,caption\n"
        "a.jpg,good\n"
        "../secret.jpg,escape\n"
        f"{outside},absolute\n"
        "sub/../../secret.jpg,sneaky\n"
        "link.jpg,via symlink\n"
        "missing.jpg,not there\n"
        "case.jpg,wrong case\n"
        "Case.jpg,   \n"
        "inlink.jpg,inside link\n", encoding="utf-8")
    res = run(p, tmp_path / "out")
    m, r = read(tmp_path / "out")
    assert sorted(m["caption"]) == ["good", "inside link"]  # inlink is a duplicate of a.jpg: merged
    assert m["image_id"].nunique() == 1
    by_row = dict(zip(r["row"], r["reason"]))
    assert "leaves the photos folder" in by_row["3"]
    assert "absolute path" in by_row["4"]
    assert "leaves the photos folder" in by_row["5"]
    assert "outside the photos folder" in by_row["6"]
    assert "not found" in by_row["7"]
    assert "did you mean 'Case.jpg'" in by_row["8"]
    assert "empty" in by_row["9"]
    files = dict(zip(r[r["row"] == ""]["path"], r[r["row"] == ""]["reason"]))
    assert "outside the photos folder" in files["link.jpg"]
    assert "no usable caption" in files["Case.jpg"]
    assert res.report["duplicates_merged"]["images"] == 1
    check_adds_up(res, tmp_path / "out")


def test_symlinked_folder_outside_refused(tmp_path):
    p = tmp_path / "p"
    img(p / "cls" / "a.jpg")
    img(tmp_path / "elsewhere" / "b.jpg")
    (p / "evil").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    res = run(p, tmp_path / "out")
    m, r = read(tmp_path / "out")
    assert m["path"].unique().tolist() == ["cls/a.jpg"]
    assert "outside the photos folder" in dict(zip(r["path"], r["reason"]))["evil"]
    check_adds_up(res, tmp_path / "out")


# --------------------------------------------------------------------------------------- no data
def test_empty_folder(tmp_path):
    (tmp_path / "p").mkdir()
    with pytest.raises(DataError) as e:
        run(tmp_path / "p", tmp_path / "out")
    assert "no photos found" in e.value.message and "captions.csv" in e.value.hint
    assert e.value.exit_code == 3


def test_photos_without_any_captions(tmp_path):
    img(tmp_path / "p" / "a.jpg")
    with pytest.raises(DataError, match="no captions"):
        run(tmp_path / "p", tmp_path / "out")


def test_missing_folder_and_bad_options(tmp_path):
    with pytest.raises(DataError, match="not found"):
        run(tmp_path / "nope", tmp_path / "out")
    img(tmp_path / "p" / "c" / "a.jpg")
    with pytest.raises(ConfigError):
        run(tmp_path / "p", tmp_path / "out", split="0.5,0.1")
    with pytest.raises(ConfigError):
        run(tmp_path / "p", tmp_path / "out", fmt="xml")
    with pytest.raises(ConfigError):
        run(tmp_path / "p", tmp_path / "p")


def test_no_usable_pair_writes_rejected_and_guides(tmp_path):
    p = tmp_path / "p"
    (p / "a.jpg").parent.mkdir(parents=True)
    (p / "a.jpg").write_bytes(b"")
    (p / "captions.csv").write_text("image,caption\na.jpg,hello\nb.jpg,gone\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        run(p, tmp_path / "out")
    assert "no usable image-caption pair" in e.value.message and "rejected.csv" in e.value.hint
    r = pd.read_csv(tmp_path / "out" / "rejected.csv", dtype=str, keep_default_na=False)
    assert len(r) == 3  # the empty file, its row, the row naming a missing file
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_out_dir_inside_photos_is_skipped(tmp_path):
    p = tmp_path / "p"
    img(p / "c" / "a.jpg")
    res1 = run(p, p / "data")
    res2 = run(p, p / "data")
    assert res1.counts["files"]["found"] == res2.counts["files"]["found"] == 1
    assert res1.dataset_hash == res2.dataset_hash


def test_hidden_files_ignored_other_files_rejected(tmp_path):
    p = tmp_path / "p"
    img(p / "c" / "a.jpg")
    (p / ".DS_Store").write_bytes(b"x")
    (p / "c" / "notes.docx").write_bytes(b"x")
    res = run(p, tmp_path / "out")
    _, r = read(tmp_path / "out")
    assert r["path"].tolist() == ["c/notes.docx"] and "not an image file type" in r["reason"][0]
    check_adds_up(res, tmp_path / "out")
    assert os.stat(tmp_path / "out" / "manifest.csv").st_mode & 0o044  # ordinary permissions


def test_two_tables_second_listed_and_counts_add_up(tmp_path):
    p = tmp_path / "p"
    img(p / "a.jpg")
    (p / "captions.csv").write_text("image,caption\na.jpg,from csv\n", encoding="utf-8")
    (p / "captions.jsonl").write_text('{"image": "a.jpg", "caption": "from jsonl"}\n', encoding="utf-8")
    res = run(p, tmp_path / "out")
    m, r = read(tmp_path / "out")
    assert m["caption"].tolist() == ["from csv"]
    assert r["path"].tolist() == ["captions.jsonl"] and "only captions.csv is read" in r["reason"][0]
    assert res.counts["rows"]["found"] == 1
    check_adds_up(res, tmp_path / "out")


def test_earlier_output_inside_photos_is_skipped(tmp_path):
    p = tmp_path / "p"
    img(p / "c" / "a.jpg")
    run(p, p / "old_data")
    res = run(p, tmp_path / "new")
    assert res.counts["files"]["found"] == 1 and res.counts["rejected"] == 0
    assert any("old_data" in n for n in res.notes)


FORMULAS = ['=HYPERLINK("http://example.invalid","click")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3",
            "'quoted already"]


def test_spreadsheet_formulas_are_written_as_text_and_read_back_unchanged(tmp_path):
    """Captions and labels that Excel would run as formulas are escaped in every CSV mwa writes, and mwa reads
    them back exactly (the dataset hash is that of the original text)."""
    from mwa_cli.data.manifest import dataset_hash, load_manifest

    p = tmp_path / "photos"
    rows = ["image,caption,label"]
    for i, text in enumerate(FORMULAS):
        img(p / f"{i}.jpg")
        rows.append(f'{i}.jpg,"{text.replace(chr(34), chr(34) * 2)}","=1+{i}"')
    (p / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    run(p, tmp_path / "out")
    raw = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)  # as a spreadsheet sees it
    for col in ("caption", "label"):
        assert not any(v.startswith(("=", "+", "-", "@")) for v in raw[col]), raw[col].tolist()
    m = load_manifest(tmp_path / "out")
    assert sorted(m["caption"]) == sorted(FORMULAS)
    assert sorted(set(m["label"])) == sorted(f"=1+{i}" for i in range(len(FORMULAS)))
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["dataset_hash"] == dataset_hash(m)
