"""An index's embeddings are a read-only memory map of embeddings.safetensors (archives larger than RAM): exact
search scans it in blocks with the same results as a matrix held in RAM, nothing is copied or writable, and a
reader keeps a valid view while `mwa index` renames a new generation over the file."""

from __future__ import annotations

import dataclasses
import mmap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.search import query
from mwa_cli.search.build import build_index
from mwa_cli.search.model import load_search_model
from mwa_cli.search.query import search, similar
from mwa_cli.search.store import EMB_FILE, SearchIndex
from tests.helpers.adapter_runs import perturbed_adapter_run

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _photos(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(root / f"p{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("mmap")
    run = perturbed_adapter_run(root / "run")
    sm = load_search_model(run, device="cpu")
    build_index(_photos(root / "photos", 24), run, root / "idx", search_model=sm)
    return root, run, sm


def test_the_embeddings_are_a_read_only_map_of_the_file_not_a_copy(built):
    root, _, sm = built
    idx = SearchIndex.load(root / "idx")
    mapped = idx.images.base
    assert isinstance(mapped, np.memmap) and isinstance(mapped._mmap, mmap.mmap)
    assert Path(mapped.filename).resolve() == (root / "idx" / EMB_FILE).resolve()
    assert not idx.images.flags.writeable and not idx.images.flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        idx.images[0, 0] = 1.0
    search(idx, sm, text="a scratch", top=3)
    assert idx.images.base is mapped  # searching does not swap in a copy


def test_blockwise_search_of_the_map_equals_a_matrix_in_ram(built, monkeypatch):
    root, _, sm = built
    mapped = SearchIndex.load(root / "idx")
    in_ram = dataclasses.replace(mapped, images=np.array(mapped.images))
    assert in_ram.images.flags.owndata
    row_bytes = mapped.images.shape[1] * 4
    assert (root / "idx" / EMB_FILE).stat().st_size > 4 * 5 * row_bytes  # 24 rows: 5 blocks of 5 below
    texts = ["a long scratch on the upper left", "a dent near the weld", "右上に傷"]
    reference = [search(in_ram, sm, text=t, top=24)["images"] for t in texts]
    ref_similar = similar(in_ram, mapped.row_ids[3], top=10)["images"]
    monkeypatch.setattr(query, "BLOCK_BYTES", 5 * row_bytes)  # 5 rows a block: the file spans 5 blocks
    for text, ref in zip(texts, reference):
        _assert_same_hits(search(mapped, sm, text=text, top=24)["images"], ref)
    _assert_same_hits(similar(mapped, mapped.row_ids[3], top=10)["images"], ref_similar)


def _assert_same_hits(got: list[dict], want: list[dict]) -> None:
    """Same ids in the same order, the same scores up to the last bit of a float32 product (a block of 5 rows
    and the whole matrix are multiplied by different kernels; the 6-decimal rounding can then differ by 1e-6)."""
    assert [{k: v for k, v in h.items() if k != "score"} for h in got] == \
        [{k: v for k, v in h.items() if k != "score"} for h in want]
    assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1.5e-6)


def test_a_reader_keeps_its_generation_while_mwa_index_renames_a_new_one(built, tmp_path):
    root, run, sm = built
    photos = _photos(tmp_path / "photos", 6, seed=1)
    out = tmp_path / "idx"
    build_index(photos, run, out, search_model=sm)
    old = SearchIndex.load(out)
    before = np.array(old.images)
    _photos(photos, 9, seed=2)  # every photo changed or new: the next generation's rows all differ
    summary = build_index(photos, run, out, search_model=sm)
    assert summary["counts"]["embedded"] == 9
    new = SearchIndex.load(out)
    assert new.n_images == 9 and not np.array_equal(np.array(new.images[:6]), before)
    assert np.array_equal(np.array(old.images), before)  # the old inode lives on behind the old map
    res = runner.invoke(app, ["search", "a scratch", "--index", str(out), "--json"])
    assert res.exit_code == 0, res.output


def test_a_cut_short_embeddings_file_is_refused_with_a_hint(built, tmp_path):
    root, run, sm = built
    out = tmp_path / "idx"
    build_index(_photos(tmp_path / "photos", 4), run, out, search_model=sm)
    emb = out / EMB_FILE
    emb.write_bytes(emb.read_bytes()[:-64])
    res = runner.invoke(app, ["search", "a scratch", "--index", str(out)])
    out_text = " ".join(res.output.split())
    assert res.exit_code == 3 and "cut short" in out_text and "--rebuild" in out_text, out_text
    assert "Traceback" not in out_text
