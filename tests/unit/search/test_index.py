"""`mwa index` / `mwa search`: incremental index, exact search, refused indexes, bad input, HTML escaping, JSON."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.errors import CheckpointError, ConfigError, DataError
from mwa_cli.search.build import build_index
from mwa_cli.search.html import PhotoThumbs, render_search_html
from mwa_cli.search.model import load_search_model
from mwa_cli.search.query import exact_topk, search
from mwa_cli.search.store import SearchIndex
from tests.helpers.adapter_runs import perturbed_adapter_run

runner = CliRunner()


def _flat(res) -> str:
    """CLI output with Rich's line wrapping undone."""
    return " ".join(res.output.split())


def _make_run(path: Path, seed: int = 0, method: str = "mwa") -> Path:
    return perturbed_adapter_run(path, "beit3-tiny-test", method, seed)


def _photo(path: Path, seed: int, size=(40, 30)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)


def _photos(root: Path, n: int = 8) -> Path:
    for i in range(n):
        _photo(root / ("sub" if i % 2 else "") / f"p{i}.png", i)
    _photo(root / "右上の傷.png", 100)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _make_run(tmp_path_factory.mktemp("search_run") / "run")


@pytest.fixture(scope="module")
def model(run_dir):
    return load_search_model(run_dir, device="cpu")


def _caption_data_dir(root: Path) -> Path:
    import pandas as pd

    root.mkdir(parents=True)
    rows = [{"image_id": "a" * 16, "path": "p0.png", "caption": "a long scratch <script>alert(1)</script>",
             "label": "scratch", "split": "train", "width": 40, "height": 30},
            {"image_id": "b" * 16, "path": "p1.png", "caption": "a dent near the weld", "label": "dent",
             "split": "test", "width": 40, "height": 30},
            {"image_id": "c" * 16, "path": "p2.png", "caption": "a dent near the weld", "label": "dent",
             "split": "test", "width": 40, "height": 30}]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "dataset.json").write_text(json.dumps({"schema_version": 1, "source": str(root), "dataset_hash": "h1"}))
    return root


# ------------------------------------------------------------------------------------------------ index
def test_incremental_rerun_embeds_only_changed(tmp_path, run_dir, model):
    photos = _photos(tmp_path / "photos")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.doc").write_bytes(b"x")
    (photos / ".hidden.png").write_bytes(b"x")
    shutil.copy(photos / "p0.png", photos / "p0_copy.png")
    out = tmp_path / "idx"
    calls: list[tuple[int, int]] = []
    first = build_index(photos, run_dir, out, search_model=model, progress=lambda done, total: calls.append((done, total)))
    c = first["counts"]
    assert c["embedded"] == 9 and c["files_indexed"] == 10 and c["images"] == 9 and c["duplicates_merged"] == 1
    # every file to decode is counted once (rejected, duplicate or embedded): (0, n) first, (n, n) last
    assert calls[0] == (0, 11) and calls[-1] == (11, 11) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    rej = (out / "rejected.csv").read_text(encoding="utf-8").splitlines()
    assert rej[0] == "path,row,reason" and len(rej) == 3
    assert any(r.startswith("broken.jpg,,") for r in rej) and any(r.startswith("notes.doc,,") for r in rej)

    idx1 = SearchIndex.load(out)
    again = build_index(photos, run_dir, out, search_model=model)
    assert again["counts"]["embedded"] == 0 and again["counts"]["reused"] == 10

    _photo(photos / "sub" / "p3.png", 999)                # changed content
    os.utime(photos / "p2.png", ns=(1, 1))                 # touched, same content: decoded, not embedded
    (photos / "p4.png").unlink()                           # removed
    _photo(photos / "新しい.png", 500)                      # new
    third = build_index(photos, run_dir, out, search_model=model)
    c = third["counts"]
    assert c["embedded"] == 2 and c["removed"] == 1 and c["files_indexed"] == 10
    idx = SearchIndex.load(out)
    paths = list(idx.manifest["path"])
    assert "p4.png" not in paths and "新しい.png" in paths and "右上の傷.png" in paths
    # unchanged photos keep exactly the same embedding
    old_row = dict(zip(idx1.manifest["path"], idx1.manifest["row"]))
    new_row = dict(zip(idx.manifest["path"], idx.manifest["row"]))
    for p in ("p0.png", "p2.png", "sub/p1.png"):
        assert np.array_equal(idx.images[new_row[p]], idx1.images[old_row[p]])
    assert not np.array_equal(idx.images[new_row["sub/p3.png"]], idx1.images[old_row["sub/p3.png"]])
    # embeddings are those of a fresh build
    fresh = build_index(photos, run_dir, tmp_path / "fresh", search_model=model)
    assert fresh["counts"]["embedded"] == 9  # p0_copy shares p0's embedding
    idx_f = SearchIndex.load(tmp_path / "fresh")
    fr = dict(zip(idx_f.manifest["path"], idx_f.manifest["row"]))
    for p in paths:
        assert np.allclose(idx.images[new_row[p]], idx_f.images[fr[p]], atol=1e-5)


def test_index_from_other_adapter_refused(tmp_path, run_dir, model):
    photos = _photos(tmp_path / "photos", n=3)
    out = tmp_path / "idx"
    build_index(photos, run_dir, out, search_model=model)
    other = _make_run(tmp_path / "other", seed=7)
    with pytest.raises(CheckpointError, match="another adapter"):
        build_index(photos, other, out)
    res = runner.invoke(app, ["search", "scratch", "--index", str(out), "--adapter", str(other)])
    assert res.exit_code != 0 and "another adapter" in _flat(res)
    # another backbone weights: the recorded backbone identity differs
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    meta["identity"]["backbone_weights_sha256"] = "f" * 64
    (out / "index.json").write_text(json.dumps(meta), encoding="utf-8")
    res = runner.invoke(app, ["search", "scratch", "--index", str(out)])
    assert res.exit_code != 0 and "backbone" in _flat(res)
    # --rebuild starts over with the new adapter
    summary = build_index(photos, other, out, rebuild=True)
    assert summary["counts"]["embedded"] == 4


def test_bad_inputs(tmp_path, run_dir, model):
    with pytest.raises(DataError, match="not found"):
        build_index(tmp_path / "missing", run_dir, tmp_path / "idx", search_model=model)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no photos"):
        build_index(empty, run_dir, tmp_path / "idx", search_model=model)
    photos = _photos(tmp_path / "photos", n=2)
    out = tmp_path / "idx"
    build_index(photos, run_dir, out, search_model=model)
    idx = SearchIndex.load(out)
    with pytest.raises(ConfigError, match="empty"):
        search(idx, model, text="   ")
    with pytest.raises(ConfigError):
        search(idx, model)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="cannot be used"):
        search(idx, model, image=bad)
    with pytest.raises(DataError, match="not found"):
        search(idx, model, image=tmp_path / "nope.jpg")
    # CLI: messages, exit codes, no traceback
    res = runner.invoke(app, ["search", "", "--index", str(out)])
    assert res.exit_code == 2 and "empty" in _flat(res) and "Traceback" not in _flat(res)
    res = runner.invoke(app, ["search", "--image", str(bad), "--index", str(out)])
    assert res.exit_code == 3 and "cannot be used" in _flat(res)
    res = runner.invoke(app, ["search", "crack", "--index", str(tmp_path / "no_index")])
    assert res.exit_code == 3 and "no index" in _flat(res)
    res = runner.invoke(app, ["search", "crack", "--index", str(photos)])
    assert res.exit_code == 3 and "not a search index" in _flat(res)
    # an interrupted write (embeddings from another generation) is detected
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    meta["generation"] = "0" * 32
    (out / "index.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError, match="incomplete"):
        SearchIndex.load(out)


# ------------------------------------------------------------------------------------------------ search
def test_exact_topk_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    m = torch.nn.functional.normalize(torch.randn(1000, 32, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(5, 32, generator=g), dim=1)
    ref = q @ m.T
    ref_s, ref_i = torch.sort(ref, dim=1, descending=True, stable=True)
    for chunk in (7, 100, 333, 4096):
        s, i = exact_topk(m, q, 10, chunk=chunk)
        assert torch.equal(i, ref_i[:, :10])
        assert torch.allclose(s, ref_s[:, :10], atol=1e-6)
    s, i = exact_topk(m[:3], q, 10)
    assert i.shape == (5, 3)


def test_search_matches_brute_force_and_json_shape(tmp_path, run_dir, model):
    photos = _photos(tmp_path / "photos", n=12)
    out = tmp_path / "idx"
    build_index(photos, run_dir, out, search_model=model, chunk=5)  # several decode chunks
    idx = SearchIndex.load(out)
    res = search(idx, model, text="a long scratch on the upper left", top=5)
    q = model.encode_texts(["a long scratch on the upper left"])[0]
    ref = idx.images @ q.numpy()
    order = np.argsort(-ref, kind="stable")[:5]
    assert [h["image_id"] for h in res["images"]] == [idx.row_ids[r] for r in order]
    assert np.allclose([h["score"] for h in res["images"]], ref[order], atol=1e-5)
    # a photo finds itself first, score 1
    res = search(idx, model, image=photos / "sub" / "p3.png", top=3)
    assert res["images"][0]["path"] == "sub/p3.png" and res["images"][0]["score"] == pytest.approx(1.0, abs=1e-4)

    r = runner.invoke(app, ["search", "右上に傷", "--index", str(out), "--top", "3", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert set(data) >= {"query", "index", "top", "images", "timing_ms", "warnings", "n_images"}
    assert data["query"] == {"kind": "text", "text": "右上に傷"}
    assert len(data["images"]) == 3 and [h["rank"] for h in data["images"]] == [1, 2, 3]
    assert set(data["images"][0]) == {"rank", "score", "path", "image_id", "duplicates"}
    assert data["images"][0]["score"] >= data["images"][1]["score"] >= data["images"][2]["score"]
    r = runner.invoke(app, ["index", str(photos), "--adapter", str(run_dir), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["counts"]["embedded"] == 0 and summary["counts"]["files_indexed"] == 13


def test_captions_and_html_escaping(tmp_path, run_dir, model):
    photos = tmp_path / "photos"
    _photo(photos / "<script>alert(1)</script>.png", 1)
    _photo(photos / "ok.png", 2)
    data = _caption_data_dir(tmp_path / "data")
    out = tmp_path / "idx"
    s = build_index(photos, run_dir, out, captions_dir=data, search_model=model)
    assert s["counts"]["captions"] == 2 and s["counts"]["captions_embedded"] == 2
    again = build_index(photos, run_dir, out, search_model=model)  # caption set kept, not redone
    assert again["counts"]["captions"] == 2 and again["counts"]["captions_embedded"] == 0
    idx = SearchIndex.load(out)
    res = search(idx, model, image=photos / "ok.png", top=5)
    assert len(res["captions"]) == 2
    caps = {c["caption"] for c in res["captions"]}
    assert "a long scratch <script>alert(1)</script>" in caps
    ref = (idx.caption_emb @ model.encode_pixels(
        __import__("mwa_cli.search.query", fromlist=["x"]).load_query_image(photos / "ok.png", 32))[0]).numpy()
    assert res["captions"][0]["caption"] == idx.captions["caption"][int(np.argmax(ref))]
    html = render_search_html(res, thumbs=PhotoThumbs(idx.source))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert html.count("data:image/jpeg;base64,") >= 3  # query + 2 results
    r = runner.invoke(app, ["search", "--image", str(photos / "ok.png"), "--index", str(out),
                            "--html", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page
    # a text query with a <script> file name in the results, through the CLI table
    r = runner.invoke(app, ["search", "scratch", "--index", str(out), "--top", "2"])
    assert r.exit_code == 0 and "<script>alert(1)</script>.png" in _flat(r)


def test_thumbnails_never_leave_the_photos_folder(tmp_path):
    outside = tmp_path / "secret.png"
    _photo(outside, 3)
    root = tmp_path / "photos"
    root.mkdir()
    thumbs = PhotoThumbs(root)
    assert thumbs.thumbnail("../secret.png") is None


def test_nprobe_without_ivf_and_bad_options(tmp_path, run_dir, model):
    photos = _photos(tmp_path / "photos", n=2)
    out = tmp_path / "idx"
    build_index(photos, run_dir, out, search_model=model)
    idx = SearchIndex.load(out)
    with pytest.raises(ConfigError, match="no approximate index") as ei:
        search(idx, model, text="crack", nprobe=4)
    assert "--approx" in (ei.value.hint or "")
    res = runner.invoke(app, ["search", "crack", "--index", str(out), "--nprobe", "4"])
    assert res.exit_code == 2 and "no approximate index" in _flat(res) and "--approx" in _flat(res)
    assert "Traceback" not in _flat(res)
    res = runner.invoke(app, ["search", "crack", "--index", str(out), "--nprobe", "0"])
    assert res.exit_code == 2 and "--nprobe must be at least 1" in _flat(res)
    res = runner.invoke(app, ["search", "--index", str(out)])
    assert res.exit_code == 2 and "nothing to search for" in _flat(res)
    res = runner.invoke(app, ["search", "crack", "--image", str(photos / "p0.png"), "--index", str(out)])
    assert res.exit_code == 2 and "not both" in _flat(res)
    with pytest.raises(ConfigError, match="--top"):
        search(idx, model, text="crack", top=0)
    # index options are checked by build_index itself (the command only passes them on)
    for kw, msg in (({"batch_size": 0}, "--batch-size"), ({"workers": 0}, "--workers"),
                    ({"approx": True, "nlist": 0}, "--nlist"), ({"nlist": 8}, "go with --approx")):
        with pytest.raises(ConfigError, match=msg):
            build_index(photos, run_dir, out, search_model=model, **kw)
    res = runner.invoke(app, ["index", str(photos), "--adapter", str(run_dir), "--out", str(out), "--nlist", "8"])
    assert res.exit_code == 2 and "go with --approx" in _flat(res)
