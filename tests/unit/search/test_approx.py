"""The faiss approximate index: recall against exact search, choice by size, persistence, incremental updates,
refusals (stale, foreign or damaged files, another adapter) and the `mwa index --approx` / `mwa search --nprobe`
commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.errors import CheckpointError, ConfigError, DataError, IntegrityError
from mwa_cli.search.approx import ApproxIndex, KeyRows, choose_kind, image_key, recall_at_k
from mwa_cli.search.build import build_index
from mwa_cli.search.model import load_search_model
from mwa_cli.search.query import exact_topk, search
from mwa_cli.search.store import SearchIndex
from tests.unit.search.test_index import _make_run, _photo, _photos

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def clustered(n: int, d: int, seed: int = 0, centres: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("approx_run") / "run")


@pytest.fixture(scope="module")
def model(run_dir):
    return load_search_model(run_dir, device="cpu")


def test_ivf_flat_recall_and_full_probe_is_exact():
    x = clustered(3000, 16)
    keys = np.arange(3000, dtype=np.int64) * 7 + 3  # keys are not rows
    ivf = ApproxIndex.build(x, keys, kind="ivf-flat", nlist=32)
    kr = KeyRows(keys)
    q = x[:30]
    _, exact_rows = exact_topk(torch.from_numpy(x), torch.from_numpy(q), 10)
    s_all, all_rows = ivf.search(q, 10, nprobe=32, key_rows=kr)  # every list visited = exact
    assert recall_at_k(all_rows, exact_rows.numpy()) == 1.0
    assert np.allclose(s_all[:, 0], 1.0, atol=1e-5) and (all_rows[:, 0] == np.arange(30)).all()
    _, some = ivf.search(q, 10, nprobe=2, key_rows=kr)
    assert 0.3 < recall_at_k(some, exact_rows.numpy()) < 1.0  # approximate, and not useless


@pytest.mark.slow  # a real subprocess or several commands: seconds
def test_ivf_pq_reranked_recall_and_size_rules():
    x = clustered(12000, 32, seed=1)
    keys = np.arange(12000, dtype=np.int64)
    pq = ApproxIndex.build(x, keys, kind="ivf-pq", nlist=16)
    q = x[:40]
    _, exact_rows = exact_topk(torch.from_numpy(x), torch.from_numpy(q), 10)
    _, rows = pq.search(q, 10, nprobe=16, key_rows=KeyRows(keys), vectors=x)
    assert recall_at_k(rows, exact_rows.numpy()) >= 0.9
    sq8 = ApproxIndex.build(x, keys, kind="ivf-sq8", nlist=16)
    _, rows = sq8.search(q, 10, nprobe=16, key_rows=KeyRows(keys), vectors=x)
    assert recall_at_k(rows, exact_rows.numpy()) >= 0.99  # every list visited + exact re-ranking
    fs = ApproxIndex.build(x, keys, kind="ivf-fastscan", nlist=16)
    _, rows = fs.search(q, 10, nprobe=16, key_rows=KeyRows(keys), vectors=x)
    assert recall_at_k(rows, exact_rows.numpy()) >= 0.99  # 4-bit codes, but 1000 candidates re-ranked exactly
    _, coarse = fs.search(q, 10, nprobe=16, key_rows=KeyRows(keys))
    assert recall_at_k(coarse, exact_rows.numpy()) < 0.99  # without re-ranking the 4-bit codes do lose neighbours
    # auto: IVF-Flat for small archives, IVF-FastScan from 100k photos
    assert choose_kind(99_999) == "ivf-flat" and choose_kind(1_000_000) == "ivf-fastscan"
    for kind in ("ivf-pq", "ivf-fastscan"):
        with pytest.raises(ConfigError, match="at least 10,000 photos"):
            ApproxIndex.build(x[:500], keys[:500], kind=kind)
    with pytest.raises(ConfigError, match="unknown approximate index kind"):
        ApproxIndex.build(x[:500], keys[:500], kind="hnsw-ish")


def test_persisted_round_trip_and_damaged_files(tmp_path):
    x = clustered(500, 16)
    keys = np.arange(500, dtype=np.int64)
    ivf = ApproxIndex.build(x, keys, kind="ivf-flat", nlist=8)
    ivf.save(tmp_path / "a.faiss")
    assert [p.name for p in tmp_path.iterdir()] == ["a.faiss"]  # no temporary file left
    back = ApproxIndex.load(tmp_path / "a.faiss", kind="ivf-flat", trained_rows=500)
    kr = KeyRows(keys)
    a, b = ivf.search(x[:5], 10, 3, key_rows=kr), back.search(x[:5], 10, 3, key_rows=kr)
    assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])
    with pytest.raises(ValueError, match="not the ivf-pq index"):
        ApproxIndex.load(tmp_path / "a.faiss", kind="ivf-pq", trained_rows=500)
    with pytest.raises(ValueError, match="not the ivf-sq8 index"):
        ApproxIndex.load(tmp_path / "a.faiss", kind="ivf-sq8", trained_rows=500)
    with pytest.raises(ValueError, match="not the ivf-fastscan index"):
        ApproxIndex.load(tmp_path / "a.faiss", kind="ivf-fastscan", trained_rows=500)
    (tmp_path / "junk.faiss").write_bytes(b"not faiss at all")
    with pytest.raises(ValueError, match="not a faiss index"):
        ApproxIndex.load(tmp_path / "junk.faiss", kind="ivf-flat", trained_rows=1)


def test_fastscan_updates_in_place_and_round_trips(tmp_path):
    x = clustered(12000, 32, seed=2)
    keys = np.arange(12000, dtype=np.int64) * 3 + 1
    fs = ApproxIndex.build(x[:11000], keys[:11000], kind="ivf-fastscan", nlist=16)
    assert fs.remove(keys[:500]) == 500
    fs.add(x[11000:], keys[11000:])
    assert fs.ntotal == 11500 and not fs.needs_retraining()
    live = np.arange(500, 12000)
    kr = KeyRows(keys)
    q = x[11000:11030]  # photos added after training are found
    _, rows = fs.search(q, 10, nprobe=16, key_rows=kr, vectors=x)
    assert (rows[:, 0] == np.arange(11000, 11030)).all() and np.isin(rows, live).all()
    fs.save(tmp_path / "fs.faiss")
    back = ApproxIndex.load(tmp_path / "fs.faiss", kind="ivf-fastscan", trained_rows=11000)
    assert np.array_equal(back.search(q, 10, 4, key_rows=kr, vectors=x)[1], fs.search(q, 10, 4, key_rows=kr, vectors=x)[1])


def test_key_rows_maps_keys_and_misses():
    kr = KeyRows(np.array([50, 10, 30], dtype=np.int64))
    assert kr.rows(np.array([[10, 30, 50, -1, 20]])).tolist() == [[1, 2, 0, -1, -1]]
    assert image_key("f" * 16) == int("f" * 15, 16) and image_key("0" * 16) == 0


def test_built_by_mwa_index_full_probe_equals_exact_and_cli(tmp_path, run_dir, model):
    photos = _photos(tmp_path / "photos", n=12)
    out = tmp_path / "idx"
    s = build_index(photos, run_dir, out, search_model=model, approx=True, nlist=4)
    assert s["approx"]["kind"] == "ivf-flat" and s["approx"]["nlist"] == 4 and s["approx"]["how"] == "built"
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    rec = meta["approx"]
    assert rec["kind"] == "ivf-flat" and rec["kind_option"] == "auto" and rec["rows"] == 13
    assert rec["file"] == f"approx-{meta['generation'][:16]}.faiss" and (out / rec["file"]).is_file()
    assert rec["library"].startswith("faiss ")
    idx = SearchIndex.load(out)
    for kw in ({"text": "a long scratch on the upper left"}, {"image": photos / "sub" / "p3.png"}):
        exact = search(idx, model, top=8, **kw)
        approx = search(idx, model, top=8, nprobe=4, **kw)  # nprobe = nlist: every list visited
        assert exact["search"] == {"method": "exact"}
        assert approx["search"] == {"method": "ivf-flat", "nprobe": 4, "nlist": 4}
        assert [h["image_id"] for h in approx["images"]] == [h["image_id"] for h in exact["images"]]
        assert [h["score"] for h in approx["images"]] == pytest.approx([h["score"] for h in exact["images"]],
                                                                        abs=1e-5)
    few = search(idx, model, text="scratch", top=13, nprobe=1)  # one list: fewer hits, no padding rows
    assert 1 <= len(few["images"]) <= 13 and all(h["path"] for h in few["images"])
    r = runner.invoke(app, ["search", "右上に傷", "--index", str(out), "--top", "3", "--nprobe", "4", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["search"] == {"method": "ivf-flat", "nprobe": 4, "nlist": 4}
    r = runner.invoke(app, ["index", str(photos), "--adapter", str(run_dir), "--out", str(tmp_path / "i2"),
                            "--approx", "--approx-kind", "ivf-pq"])
    assert r.exit_code == 2 and "at least 10,000 photos" in " ".join(r.output.split())
    r = runner.invoke(app, ["index", str(photos), "--adapter", str(run_dir), "--out", str(tmp_path / "i3"),
                            "--approx-kind", "ivf-flat"])
    assert r.exit_code == 2 and "go with --approx" in " ".join(r.output.split())


def test_incremental_updates_without_retraining(tmp_path, run_dir, model):
    photos = _photos(tmp_path / "photos", n=8)
    out = tmp_path / "idx"
    build_index(photos, run_dir, out, search_model=model, approx=True, nlist=2)
    first = json.loads((out / "index.json").read_text(encoding="utf-8"))["approx"]
    # nothing changed: the same file, hard-linked under the new generation's name (no rewrite)
    again = build_index(photos, run_dir, out, search_model=model)
    assert again["approx"]["how"] == "unchanged"
    rec = json.loads((out / "index.json").read_text(encoding="utf-8"))["approx"]
    assert rec["file"] != first["file"] and not (out / first["file"]).exists()
    assert sorted(p.name for p in out.glob("approx-*")) == [rec["file"]]
    # a new photo and a removed one: added / taken out in place, lists not retrained
    _photo(photos / "new.png", 77)
    (photos / "p0.png").unlink()
    third = build_index(photos, run_dir, out, search_model=model)
    assert third["counts"]["embedded"] == 1 and third["approx"]["how"] == "updated"
    rec = json.loads((out / "index.json").read_text(encoding="utf-8"))["approx"]
    assert rec["trained_rows"] == 9 and rec["rows"] == 9
    idx = SearchIndex.load(out)
    res = search(idx, model, image=photos / "new.png", top=1, nprobe=2)
    assert res["images"][0]["path"] == "new.png"
    exact = search(idx, model, text="scratch", top=9)
    approx = search(idx, model, text="scratch", top=9, nprobe=2)
    assert [h["path"] for h in approx["images"]] == [h["path"] for h in exact["images"]]
    assert "p0.png" not in [h["path"] for h in approx["images"]]
    # the archive grows past 4× what the lists were trained on: retrained
    for i in range(30):
        _photo(photos / "more" / f"m{i}.png", 200 + i)
    grown = build_index(photos, run_dir, out, search_model=model)
    assert grown["approx"]["how"] == "rebuilt"
    assert json.loads((out / "index.json").read_text(encoding="utf-8"))["approx"]["trained_rows"] == 39
    # other options asked for: rebuilt with them
    other = build_index(photos, run_dir, out, search_model=model, approx=True, nlist=1)
    assert other["approx"]["how"] == "rebuilt" and other["approx"]["nlist"] == 1
    # --rebuild without --approx drops it
    last = build_index(photos, run_dir, out, search_model=model, rebuild=True)
    assert last["approx"] is None and not list(out.glob("approx-*"))
    assert json.loads((out / "index.json").read_text(encoding="utf-8"))["approx"] is None


def test_stale_damaged_or_old_format_files_are_refused_then_rebuilt(tmp_path, run_dir, model):
    photos = _photos(tmp_path / "photos", n=6)
    out = tmp_path / "idx"
    build_index(photos, run_dir, out, search_model=model, approx=True, nlist=2)
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    path = out / meta["approx"]["file"]
    # a file with another number of vectors than the index (e.g. copied from elsewhere): its sha256 differs
    x = clustered(50, meta["dim"])
    ApproxIndex.build(x, np.arange(50), kind="ivf-flat", nlist=2).save(path)
    with pytest.raises(IntegrityError, match=f"{path.name} is damaged") as ei:
        SearchIndex.load(out).ivf()
    assert "--rebuild" in (ei.value.hint or "")
    # an index written before hashes were recorded: the file's own checks still refuse it
    (out / "index.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "files"}), encoding="utf-8")
    with pytest.raises(DataError, match="holds 50 vectors"):
        SearchIndex.load(out).ivf()
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a faiss index") as ei:
        SearchIndex.load(out).ivf()
    assert "mwa index" in (ei.value.hint or "")
    res = runner.invoke(app, ["search", "crack", "--index", str(out), "--nprobe", "2"])
    assert res.exit_code == 3 and "not a faiss index" in " ".join(res.output.split())
    assert "Traceback" not in res.output
    # the next `mwa index` rebuilds it (the exact search never depended on it)
    fixed = build_index(photos, run_dir, out, search_model=model)
    assert fixed["approx"]["how"] == "rebuilt"
    assert search(SearchIndex.load(out), model, text="crack", nprobe=2)["images"]
    # an index from before faiss (hand-written IVF in ivf.safetensors): refused with what to do, then replaced
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    meta["approx"] = {"kind": "ivf", "file": "ivf.safetensors", "nlist": 2, "nlist_option": 2, "rows": 6}
    (out / "index.json").write_text(json.dumps(meta), encoding="utf-8")
    (out / "ivf.safetensors").write_bytes(b"old")
    with pytest.raises(DataError, match="older mwa"):
        SearchIndex.load(out).ivf()
    again = build_index(photos, run_dir, out, search_model=model)
    assert again["approx"]["how"] == "rebuilt" and not (out / "ivf.safetensors").exists()


def test_index_of_another_adapter_is_refused_and_left_alone(tmp_path, run_dir, model):
    photos = _photos(tmp_path / "photos", n=4)
    out = tmp_path / "idx"
    build_index(photos, run_dir, out, search_model=model, approx=True, nlist=2)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = _make_run(tmp_path / "other", seed=5)
    with pytest.raises(CheckpointError, match="another adapter"):
        build_index(photos, other, out, approx=True)
    res = runner.invoke(app, ["search", "crack", "--index", str(out), "--adapter", str(other), "--nprobe", "2"])
    assert res.exit_code == 2 and "another adapter" in " ".join(res.output.split())
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
