"""`SearchIndex.load` groups manifest.csv's files by embedding row with numpy: the same row_paths / row_ids as a
plain loop over the files, with escaped cells, copies sharing a row and rows out of order; a manifest that does
not cover the embeddings is refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mwa_cli.errors import DataError
from mwa_cli.search.rows import RowPaths
from mwa_cli.search.store import MANIFEST_COLUMNS, SCHEMA_VERSION, SearchIndex, write_index

ESCAPED = ["=", "+", "-", "@", "'"]  # write_csv escapes these first characters


def _manifest(n_rows: int, n_files: int, seed: int = 0) -> pd.DataFrame:
    """`n_files` files over `n_rows` rows (each row at least one file, copies of a row anywhere in the table),
    paths and ids starting with characters write_csv escapes."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.permutation(n_rows), rng.integers(0, n_rows, n_files - n_rows)])
    rng.shuffle(rows)
    ids = [f"{ESCAPED[r % len(ESCAPED)]}{r:015x}" for r in range(n_rows)]
    paths = [f"{ESCAPED[i % len(ESCAPED)]}photos/{i:06d}.jpg" if i % 3 else f"photos/{i:06d}.jpg"
             for i in range(n_files)]
    return pd.DataFrame({"path": paths, "image_id": [ids[r] for r in rows], "row": rows, "size": 1000,
                         "mtime_ns": 1, "width": 40, "height": 30}, columns=MANIFEST_COLUMNS)


def _write(out: Path, manifest: pd.DataFrame, n_rows: int) -> Path:
    images = torch.nn.functional.normalize(torch.randn(n_rows, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    meta = {"schema_version": SCHEMA_VERSION, "generation": "0" * 32, "identity": {}, "source": str(out / "photos")}
    out.mkdir(parents=True, exist_ok=True)
    write_index(out, images, manifest, None, None, pd.DataFrame(columns=["path", "row", "reason"]), meta)
    return out


def _reference(manifest: pd.DataFrame, n_rows: int) -> tuple[list[list[str]], list[str]]:
    """row → paths in manifest order, row → id of its last file: the loop load used before."""
    row_paths: list[list[str]] = [[] for _ in range(n_rows)]
    row_ids = [""] * n_rows
    for p, i, r in zip(manifest["path"], manifest["image_id"], manifest["row"]):
        row_paths[r].append(p)
        row_ids[r] = i
    return row_paths, row_ids


@pytest.mark.parametrize("n_rows, n_files", [(3000, 4500), (2000, 2000)])
def test_rows_group_like_a_loop_over_the_files(tmp_path, n_rows, n_files):
    manifest = _manifest(n_rows, n_files)
    idx = SearchIndex.load(_write(tmp_path / "idx", manifest, n_rows))
    want_paths, want_ids = _reference(manifest, n_rows)
    assert list(idx.row_paths) == want_paths and idx.row_ids == want_ids
    assert any(len(p) > 1 for p in want_paths) == (n_files > n_rows)
    pd.testing.assert_frame_equal(idx.manifest[MANIFEST_COLUMNS], manifest, check_dtype=False)


def test_rows_in_order_one_file_each(tmp_path):
    manifest = _manifest(50, 50).sort_values("row").reset_index(drop=True)
    idx = SearchIndex.load(_write(tmp_path / "idx", manifest, 50))
    assert list(idx.row_paths) == [[p] for p in manifest["path"]] and idx.row_ids == manifest["image_id"].tolist()


def test_row_paths_indexes_like_a_list():
    rp = RowPaths(["a", "b", "c", "d"], np.array([0, 2, 3, 4]))
    assert len(rp) == 3 and rp[0] == ["a", "b"] and rp[-1] == ["d"] and rp[1:] == [["c"], ["d"]]
    assert list(rp) == [["a", "b"], ["c"], ["d"]] and ["c"] in rp and rp.index(["d"]) == 2
    rp[0].append("x")  # each answer is a new list: the index is not changed through it
    assert rp[0] == ["a", "b"]
    for bad in (3, -4):
        with pytest.raises(IndexError):
            rp[bad]


@pytest.mark.parametrize("edit", ["row never used", "row out of range", "negative row", "empty path",
                                  "row not a number", "no row column"])
def test_a_manifest_that_does_not_cover_the_embeddings_is_refused(tmp_path, edit):
    manifest = _manifest(20, 30)
    if edit == "row never used":
        manifest = manifest[manifest["row"] != 7]
    elif edit == "row out of range":
        manifest.loc[3, "row"] = 20
    elif edit == "negative row":
        manifest.loc[3, "row"] = -1
    elif edit == "empty path":
        manifest.loc[3, "path"] = ""
    elif edit == "row not a number":
        manifest["row"] = manifest["row"].astype(str)
        manifest.loc[3, "row"] = "x"
    else:
        manifest = manifest.drop(columns="row")
    with pytest.raises(DataError, match="manifest.csv does not match the embeddings") as err:
        SearchIndex.load(_write(tmp_path / "idx", manifest, 20))
    assert "mwa index" in err.value.hint
