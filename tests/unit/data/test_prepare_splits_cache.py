"""mwa prepare: splits (deterministic, stratified, duplicates together), image cache reuse, --strict."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mwa_cli.data.cache import ImageCache, ensure_cache
from mwa_cli.data.manifest import load_dataset_info, load_manifest
from mwa_cli.data.prepare import prepare_dataset
from mwa_cli.data.splits import assign_splits, parse_ratios
from mwa_cli.errors import ConfigError, DataError


def make_set(p: Path, labels=("scratch", "dent", "hole"), per=10, extra_rows="") -> Path:
    p.mkdir(parents=True, exist_ok=True)
    rows = ["image,caption,label"]
    for lab in labels:
        for k in range(per):
            name = f"{lab}_{k}.png"
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            Image.fromarray(rng.integers(0, 255, (12, 14, 3), dtype=np.uint8)).save(p / name)
            rows += [f"{name},a {lab} number {k},{lab}", f"{name},another {lab} {k},{lab}"]
    (p / "captions.csv").write_text("\n".join(rows) + "\n" + extra_rows, encoding="utf-8")
    return p


def run(p: Path, out: Path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    kw.setdefault("image_size", 16)
    return prepare_dataset(p, out, **kw)


def splits_of(out: Path) -> dict[str, str]:
    m = load_manifest(out)
    assert (m.groupby("image_id")["split"].nunique() == 1).all()  # never straddles
    return dict(zip(m["image_id"], m["split"]))


# --------------------------------------------------------------------------------------------- splits
def test_split_deterministic_and_stratified(tmp_path):
    p = make_set(tmp_path / "p", per=20)
    r1 = run(p, tmp_path / "o1", seed=7)
    r2 = run(p, tmp_path / "o2", seed=7)
    r3 = run(p, tmp_path / "o3", seed=8)
    assert splits_of(tmp_path / "o1") == splits_of(tmp_path / "o2")
    assert r1.dataset_hash == r2.dataset_hash != r3.dataset_hash
    assert splits_of(tmp_path / "o1") != splits_of(tmp_path / "o3")
    lps = r1.report["labels_per_split"]
    assert lps["train"] == {"dent": 16, "hole": 16, "scratch": 16}
    assert lps["val"] == {"dent": 2, "hole": 2, "scratch": 2} == lps["test"]
    assert r1.counts["by_split"]["train"] == {"images": 48, "captions": 96}


def test_split_independent_of_file_names(tmp_path):
    p = make_set(tmp_path / "p", per=6)
    run(p, tmp_path / "o1")
    q = tmp_path / "q"
    q.mkdir()
    text = (p / "captions.csv").read_text(encoding="utf-8")
    for f in p.glob("*.png"):
        shutil.copy(f, q / ("renamed_" + f.name))
        text = text.replace(f.name + ",", "renamed_" + f.name + ",")
    (q / "captions.csv").write_text(text, encoding="utf-8")
    run(q, tmp_path / "o2")
    assert splits_of(tmp_path / "o1") == splits_of(tmp_path / "o2")


def test_duplicates_never_straddle_and_split_column_wins(tmp_path):
    p = make_set(tmp_path / "p", per=8)
    shutil.copy(p / "dent_0.png", p / "zz_dup_of_dent0.png")
    extra = "zz_dup_of_dent0.png,duplicate caption,dent\n"
    (p / "captions.csv").write_text((p / "captions.csv").read_text(encoding="utf-8") + extra, encoding="utf-8")
    run(p, tmp_path / "o1")
    s = splits_of(tmp_path / "o1")  # asserts no straddling
    assert len(s) == 24

    q = tmp_path / "q"
    q.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(q / "a.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(q / "b.png")
    Image.new("RGB", (8, 8), (7, 7, 7)).save(q / "c.png")
    (q / "captions.csv").write_text("image,caption,split\na.png,x,test\nb.png,y,Validation\nc.png,z,\n"
                                    "c.png,w,holdout\n", encoding="utf-8")
    res = run(q, tmp_path / "o2")
    m = load_manifest(tmp_path / "o2")
    by_path = dict(zip(m["path"], m["split"]))
    assert by_path["a.png"] == "test" and by_path["b.png"] == "val" and by_path["c.png"] == "train"
    assert "holdout" in res.rejected["reason"].iloc[0]


def test_small_labels_and_ratio_parsing():
    ids = [f"{i:02d}" for i in range(7)]
    labels = {i: ("rare" if i == "00" else "common") for i in ids}
    out, method = assign_splits(ids, labels, {}, (0.6, 0.2, 0.2), 0)
    assert set(out) == set(ids) and "too small" in method
    assert out["00"] == "train"  # the only photo of a label is trained on
    assert out == assign_splits(ids, labels, {}, (0.6, 0.2, 0.2), 0)[0]
    assert parse_ratios("80,10,10") == (0.8, 0.1, 0.1)
    assert parse_ratios("0.9,0.1") == (0.9, 0.1, 0.0)
    for bad in ("a,b,c", "0.5,0.5,0.5", "0,0.5,0.5", "-1,1,1"):
        with pytest.raises(ConfigError):
            parse_ratios(bad)


# ---------------------------------------------------------------------------------------------- cache
def test_cache_layout_and_reuse(tmp_path):
    p = make_set(tmp_path / "p", per=4)
    out = tmp_path / "out"
    r1 = run(p, out, image_size=16)
    assert r1.decoded == 12 and r1.reused == 0
    idx = json.loads((out / "cache" / "images_16.json").read_text())
    assert idx["size"] == 16 and idx["count"] == 12 and len(idx["ids"]) == 12
    assert (out / "cache" / "images_16.u8").stat().st_size == 12 * 16 * 16 * 3
    cache = ImageCache(out, 16)
    m = load_manifest(out)
    i = cache.index_of(m["image_id"][0])
    # the cached row is the bicubic square resize of the photo
    ref = np.asarray(Image.open(p / m["path"][0]).convert("RGB").resize((16, 16), Image.Resampling.BICUBIC))
    assert np.array_equal(np.asarray(cache.array[i]), ref)
    before = (out / "cache" / "images_16.u8").read_bytes()

    r2 = run(p, out, image_size=16)  # unchanged folder: nothing decoded
    assert r2.decoded == 0 and r2.reused == 12 and r2.dataset_hash == r1.dataset_hash
    assert (out / "cache" / "images_16.u8").read_bytes() == before

    # one photo changes: only it is decoded again
    Image.new("RGB", (12, 14), (0, 200, 0)).save(p / "dent_1.png")
    r3 = run(p, out, image_size=16)
    assert r3.decoded == 1 and r3.reused == 11
    assert not list((out / "cache").glob("*.tmp")) and not list((out / "cache").glob(".staging*"))


def test_ensure_cache_builds_missing_size_and_detects_changes(tmp_path):
    p = make_set(tmp_path / "p", per=3)
    out = tmp_path / "out"
    run(p, out, image_size=16)
    c = ensure_cache(out, 8, progress=False, workers=1)
    assert c.size == 8 and c.array.shape == (9, 8, 8, 3) and c.ids == list(dict.fromkeys(load_manifest(out)["image_id"]))
    assert ensure_cache(out, 8, progress=False).ids == c.ids  # second call: read, not rebuilt
    assert load_dataset_info(out)["image_size"] == 16
    (out / "cache" / "images_8.json").unlink()
    Image.new("RGB", (5, 5)).save(p / "hole_0.png")  # photo changed after prepare
    with pytest.raises(DataError, match="re-run|changed"):
        ensure_cache(out, 8, progress=False, workers=1)


def test_process_pool_path(tmp_path):
    p = make_set(tmp_path / "p", labels=("a", "b"), per=15)
    r_pool = run(p, tmp_path / "o1", workers=2)
    r_one = run(p, tmp_path / "o2", workers=1)
    assert r_pool.dataset_hash == r_one.dataset_hash
    assert (tmp_path / "o1" / "cache" / "images_16.u8").read_bytes() == (tmp_path / "o2" / "cache" / "images_16.u8").read_bytes()


# --------------------------------------------------------------------------------------------- strict
def test_strict_fails_on_any_rejection_and_writes_no_dataset(tmp_path):
    p = make_set(tmp_path / "p", per=2, extra_rows="missing.png,gone,dent\n")
    with pytest.raises(DataError) as e:
        run(p, tmp_path / "out", strict=True)
    assert e.value.exit_code == 4 and "--strict" in e.value.message
    assert (tmp_path / "out" / "rejected.csv").exists() and not (tmp_path / "out" / "manifest.csv").exists()
    res = run(p, tmp_path / "out")  # without --strict: used, and the rejection listed
    assert res.counts["rejected"] == 1
    q = make_set(tmp_path / "q", per=2)
    assert run(q, tmp_path / "o2", strict=True).counts["rejected"] == 0


def test_tiny_dataset_still_gets_val_and_test():
    ids = ["a", "b", "c"]
    out, method = assign_splits(ids, {"a": "x", "b": "y", "c": "z"}, {}, (0.8, 0.1, 0.1), 0)
    assert sorted(out.values()) == ["test", "train", "val"] and "too small" in method
    out, _ = assign_splits(ids + ["d", "e"], {}, {}, (0.8, 0.1, 0.1), 3)
    assert sorted(out.values()) == ["test", "train", "train", "train", "val"]


def test_ensure_cache_concurrent_callers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    p = make_set(tmp_path / "p", per=3)
    out = tmp_path / "out"
    run(p, out, image_size=16)
    with ThreadPoolExecutor(3) as ex:
        caches = list(ex.map(lambda _: ensure_cache(out, 12, progress=False, workers=1), range(3)))
    assert all(c.ids == caches[0].ids for c in caches)
    assert all(np.array_equal(np.asarray(c.array), np.asarray(caches[0].array)) for c in caches)


def test_cache_reused_by_content_after_touch_or_move(tmp_path):
    import os

    p = make_set(tmp_path / "p", per=3)
    out = tmp_path / "out"
    r1 = run(p, out)
    for f in p.glob("*.png"):
        os.utime(f, (1, 1))  # touched: stat differs, content same
    r2 = run(p, out)
    assert r2.decoded == 0 and r2.dataset_hash == r1.dataset_hash
    moved = tmp_path / "moved"
    shutil.move(str(p), moved)
    r3 = run(moved, out)
    assert r3.decoded == 0 and r3.dataset_hash == r1.dataset_hash
    assert load_dataset_info(out)["source"] == str(moved.resolve())
