"""`mwa index --line`: the index of the line's current version, recording that version; the next version is
indexed from the same photos without naming them; search warns when the line has moved past the index's
version; the command refuses options that --line decides."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.errors import MwaError
from mwa_cli.lines.index import index_line
from mwa_cli.lines.publish import publish, rollback
from mwa_cli.lines.store import LineStore
from mwa_cli.search.model import load_search_model
from mwa_cli.search.query import search
from mwa_cli.search.store import SearchIndex, line_version_warning

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_index_records_its_version_and_search_warns_when_the_line_moves_on(store, sample):
    LineStore.create(store).add("line-3", data_dir=sample.data)
    with pytest.raises(MwaError, match="nothing is published"):
        index_line(store, "line-3", sample.photos, device="cpu")
    publish(store, "line-3", sample.good1, device="cpu")
    with pytest.raises(MwaError, match="say which photos"):
        index_line(store, "line-3", device="cpu")
    res = index_line(store, "line-3", sample.photos, captions=sample.data, device="cpu")
    v1_index = store / "line-3" / "v1" / "index"
    assert res["line"] == {"name": "line-3", "version": 1} and res["index"] == str(v1_index)
    meta = json.loads((v1_index / "index.json").read_text())
    assert meta["line"]["version"] == 1 and meta["line"]["name"] == "line-3"
    assert meta["adapter"] == str((store / "line-3" / "v1").resolve())
    idx = SearchIndex.load(v1_index)
    sm = load_search_model(store / "line-3" / "v1", device="cpu")
    assert line_version_warning(idx.meta) is None and search(idx, sm, text="a scratch")["warnings"] == []

    publish(store, "line-3", sample.good2, device="cpu")
    warning = search(idx, sm, text="a scratch")["warnings"]
    assert len(warning) == 1 and "built with v1 of line line-3" in warning[0] and "current version is v2" in warning[0]
    assert "mwa index --line line-3" in warning[0]
    res = index_line(store, "line-3", device="cpu")  # the same photos and captions as the last index
    meta2 = json.loads((store / "line-3" / "v2" / "index" / "index.json").read_text())
    assert meta2["line"]["version"] == 2 and meta2["source"] == meta["source"]
    assert meta2["captions"]["data_dir"] == meta["captions"]["data_dir"] and res["counts"]["embedded"] == 32
    assert meta2["identity"] != meta["identity"]
    rollback(store, "line-3")
    assert line_version_warning(idx.meta) is None  # v1 is current again: its index is up to date
    (store / "line-3" / "current.json").unlink()
    assert "cannot read which version" in line_version_warning(idx.meta)


def test_the_index_command_with_line(store, sample):
    LineStore.create(store).add("line-3", data_dir=sample.data)
    publish(store, "line-3", sample.good1, device="cpu")
    res = runner.invoke(app, ["index", str(sample.photos), "--line", "line-3", "--store", str(store), "--device",
                              "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["line"] == {"name": "line-3", "version": 1}
    res = runner.invoke(app, ["index", "--line", "line-3", "--store", str(store), "--adapter", str(sample.good1)])
    assert res.exit_code == 2 and "do not apply to --line" in _flat(res.output)
    res = runner.invoke(app, ["index", "--adapter", str(sample.good1)])
    assert res.exit_code == 2 and "say which photos" in _flat(res.output)
    res = runner.invoke(app, ["index", "--line", "line-9", "--store", str(store)])
    assert res.exit_code == 2 and "no line named 'line-9'" in _flat(res.output)
