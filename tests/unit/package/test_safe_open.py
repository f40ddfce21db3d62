"""Inputs are opened only when they are regular files within their size limit, and JSON is parsed with limits
(mwa_cli/safe_open.py): a FIFO is refused without blocking (also one swapped in after the check), a device is
never read to its (missing) end, a hostile JSON file is a clear error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mwa_cli import safe_open
from mwa_cli.safe_open import InputFileError, load_json, not_regular, parse_json, read_bytes, read_text
from tests.helpers.special_files import finishes_within, make_fifo


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = make_fifo(tmp_path / "photo.jpg")
    assert "named pipe (FIFO)" in not_regular(fifo)
    with pytest.raises(InputFileError, match=r"photo .*photo.jpg: a named pipe \(FIFO\), not a regular file"):
        finishes_within(10, lambda: read_bytes(fifo, limit=100, what="photo"), [fifo])


def test_a_fifo_swapped_in_after_the_check_does_not_block(tmp_path, monkeypatch):
    fifo = make_fifo(tmp_path / "captions.csv")
    monkeypatch.setattr(safe_open, "not_regular", lambda path: None)  # the check saw a regular file
    with pytest.raises(InputFileError, match="not a regular file"):
        finishes_within(10, lambda: read_bytes(fifo, limit=100), [fifo])


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_never_read(device):
    with pytest.raises(InputFileError, match="a character device, not a regular file"):
        finishes_within(10, lambda: read_bytes(device, limit=1 << 20, what="query image"))


def test_a_link_to_a_fifo_is_a_fifo(tmp_path):
    fifo = make_fifo(tmp_path / "real")
    (tmp_path / "link.txt").symlink_to(fifo)
    with pytest.raises(InputFileError, match="named pipe"):
        finishes_within(10, lambda: read_text(tmp_path / "link.txt"), [fifo])


def test_the_size_limit_holds_before_reading(tmp_path):
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * 2000)
    assert read_bytes(big, limit=2000) == b"x" * 2000
    with pytest.raises(InputFileError, match="over the limit"):
        read_bytes(big, limit=1999)


def test_missing_folder_and_undecodable_files(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_bytes(tmp_path / "nope", limit=10)
    with pytest.raises(InputFileError, match="a folder, not a regular file"):
        read_bytes(tmp_path, limit=10)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputFileError, match="not UTF-8"):
        read_text(tmp_path / "bad.txt")


@pytest.mark.parametrize("text,why", [
    ("[" * 200_000 + "]" * 200_000, "nests deeper than 64 levels"),
    ('{"a": ' * 65 + "1" + "}" * 65, "nests deeper than 64 levels"),
    ('{"rsum": NaN}', "holds NaN"),
    ('{"rsum": Infinity}', "holds Infinity"),
    ('{"rsum": 1e400}', "too large to be finite"),
    ("[-1, 0, 100000000000000000000]", "too large for a count"),
])
def test_json_limits(text, why):
    with pytest.raises(ValueError, match=why):
        parse_json(text)


def test_json_within_the_limits_is_read_as_it_is(tmp_path):
    obj = {"a": [1, 2.5, -3, 9223372036854775807], "b": {"c": "日本\u001b"}}
    nested = '{"a": ' * 63 + "1" + "}" * 63
    assert parse_json(nested) is not None
    path = tmp_path / "x.json"
    import json

    path.write_text(json.dumps(obj), encoding="utf-8")
    assert load_json(path) == obj
    path.write_text("[" * 100 + "]" * 100, encoding="utf-8")
    with pytest.raises(InputFileError, match=r"x.json \(.*\) is not valid JSON \(nests deeper than 64 levels\)"):
        load_json(path)


def test_every_input_reader_goes_through_safe_open():
    """The readers of user files never open a path themselves (Path.read_bytes / read_text / open)."""
    repo = Path(__file__).resolve().parents[3] / "mwa_cli"
    readers = ["data/ingest.py", "data/images.py", "data/manifest.py", "data/label_text.py",
               "search/query.py", "run_files.py", "runs_view.py", "report/collect.py", "runs.py"]
    for rel in readers:
        text = (repo / rel).read_text(encoding="utf-8")
        for call in (".read_bytes()", "read_text(encoding", "json.loads(path.read_text", "open(abs_path"):
            assert call not in text, f"{rel} reads a file directly ({call})"
    assert os.path.isfile(repo / "safe_open.py")
