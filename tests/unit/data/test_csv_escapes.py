"""The tables mwa writes escape spreadsheet formulas cell by cell (`write_csv`); `read_csv` undoes it only in the
cells that start with an apostrophe and gives exactly what the per-cell rule gives, on large tables too."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mwa_cli.data import manifest as manifest_mod
from mwa_cli.data.manifest import _unescape, read_csv, write_csv

# the characters write_csv escapes, and ' already doubled
STARTS = ["=", "+", "-", "@", "\t", "\r", "'", "''"]


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    """`n` rows: paths and captions that start with each escaped character (some with a comma, so quoted), hold
    an apostrophe inside, or are plain, and an integer column."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, len(STARTS) + 2, size=(n, 2))

    def text(kind: int, i: int, what: str) -> str:
        if kind < len(STARTS):
            return f"{STARTS[kind]}{what} {i}" + (", quoted" if i % 3 == 0 else "")
        return f"operator's {what} {i}" if kind == len(STARTS) else f"{what}/{i:05d}.jpg"

    return pd.DataFrame({"path": [text(k, i, "photo") for i, k in enumerate(kinds[:, 0])],
                         "caption": [text(k, i, "scratch") for i, k in enumerate(kinds[:, 1])],
                         "row": rng.integers(0, 1000, size=n)})


def _per_cell(path: Path, **kwargs) -> pd.DataFrame:
    """The reference: every text cell through `_unescape`."""
    df = pd.read_csv(path, encoding="utf-8", keep_default_na=False, **kwargs)
    for col in df.columns:
        if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
            df[col] = df[col].map(_unescape)
    return df


@pytest.mark.parametrize("dtype", [str, {"path": str, "caption": str}, None])
def test_a_large_table_reads_back_as_written_and_as_the_per_cell_rule_reads_it(tmp_path, dtype):
    df = _table(5000)
    write_csv(tmp_path / "t.csv", df)
    raw = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    assert not raw["path"].str.startswith(("=", "+", "-", "@")).any()  # what a spreadsheet sees is escaped
    got = read_csv(tmp_path / "t.csv", dtype=dtype)
    pd.testing.assert_frame_equal(got, _per_cell(tmp_path / "t.csv", dtype=dtype))
    assert got["path"].tolist() == df["path"].tolist() and got["caption"].tolist() == df["caption"].tolist()


@pytest.mark.parametrize("cells", [["plain", "operator's scratch"], ["a", "b"]])
def test_tables_without_escaped_cells_are_read_unchanged(tmp_path, cells):
    df = pd.DataFrame({"caption": cells * 500, "n": range(1000)})
    write_csv(tmp_path / "t.csv", df)
    pd.testing.assert_frame_equal(read_csv(tmp_path / "t.csv", dtype={"caption": str}),
                                  _per_cell(tmp_path / "t.csv", dtype={"caption": str}))


@pytest.mark.parametrize("text, header, expect", [
    ("'=1+1,x\nplain,y's\n", None, [["=1+1", "x"], ["plain", "y's"]]),  # the file's first byte
    ("a,b\n\"'=1,2\",y's\n", 0, [["=1,2", "y's"]]),                      # a quoted cell
    ("a,b\r'@x,y's\r", 0, [["@x", "y's"]]),                               # after a bare CR line end
    ("a,b\r\n'-1,x\r\n", 0, [["-1", "x"]]),                                # after CRLF
])
def test_the_one_escaped_cell_of_a_file_is_found_wherever_it_is(tmp_path, text, header, expect):
    (tmp_path / "t.csv").write_bytes(text.encode("utf-8"))
    assert read_csv(tmp_path / "t.csv", header=header, dtype=str).values.tolist() == expect


def test_a_table_replaced_while_it_is_parsed_still_gets_every_cell_unescaped(tmp_path, monkeypatch):
    """The quick look for escapes must look at the bytes that were parsed, not at a newer table renamed over the
    file in between."""
    write_csv(tmp_path / "t.csv", pd.DataFrame({"caption": ["=1+1", "plain"]}))
    (tmp_path / "new.csv").write_text("caption\nplain\nplain\n", encoding="utf-8")
    parse = pd.read_csv

    def parse_then_replace(*args, **kwargs):
        df = parse(*args, **kwargs)
        os.replace(tmp_path / "new.csv", tmp_path / "t.csv")
        return df

    monkeypatch.setattr(manifest_mod.pd, "read_csv", parse_then_replace)
    assert read_csv(tmp_path / "t.csv", dtype=str)["caption"].tolist() == ["=1+1", "plain"]


def test_a_carriage_return_inside_a_cell_does_not_split_its_row(tmp_path):
    df = pd.DataFrame({"path": ["a.jpg", "b\rc.jpg", "d.jpg"], "caption": ["one\rtwo", "plain", "\rlead"],
                       "row": [0, 1, 2]})
    write_csv(tmp_path / "t.csv", df)
    back = read_csv(tmp_path / "t.csv", dtype={"path": str, "caption": str})
    assert back["path"].tolist() == df["path"].tolist() and back["caption"].tolist() == df["caption"].tolist()
    assert back["row"].tolist() == [0, 1, 2]
    write_csv(tmp_path / "plain.csv", df.assign(path=["a", "b", "c"], caption=["x", "y", "=z"]))
    assert (tmp_path / "plain.csv").read_text().splitlines()[1] == "a,x,0"  # no CR: the usual minimal quoting
