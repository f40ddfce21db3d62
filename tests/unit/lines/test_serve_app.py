"""The line server's app in process (its watcher stepped by hand): two lines answer the same query differently
from one backbone, each response names its line version, errors are clear and carry the security rules, a new
version is taken up only once it is indexed and sound, and bad start-ups fail clearly."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.errors import EXIT_DATA, MwaError
from mwa_cli.lines.index import index_line
from mwa_cli.lines.publish import publish
from mwa_cli.lines.store import LineStore
from mwa_cli.serve.lines_app import create_lines_app
from mwa_cli.serve.lines_state import LiveLines

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
Q = "/api/search?q=a+large+scratch+on+the+upper+right&top=5"


@pytest.fixture
def two_lines(store, sample):
    st = LineStore.create(store)
    for name, run in (("line-3", sample.good1), ("line-4", sample.good2)):
        st.add(name, data_dir=sample.data)
        publish(store, name, run, device="cpu")
        index_line(store, name, sample.photos, device="cpu")
    return store


def _client(lines):
    from fastapi.testclient import TestClient

    return TestClient(create_lines_app(lines), base_url="http://127.0.0.1")


def _answer(res) -> list[tuple[str, float]]:
    return [(h["path"], round(h["score"], 5)) for h in res.json()["images"]]


def test_two_lines_answer_the_same_query_differently_from_one_backbone(two_lines):
    lines = LiveLines(two_lines, device="cpu")
    c = _client(lines)
    r3, r4 = c.get(Q + "&line=line-3"), c.get(Q + "&line=line-4")
    assert r3.status_code == r4.status_code == 200
    assert r3.headers["x-mwa-line"] == "line-3 v1" and r4.headers["x-mwa-line"] == "line-4 v1"
    assert _answer(r3) != _answer(r4)
    assert _answer(c.get(Q + "&line=line-3")) == _answer(r3)  # the same line answers the same
    status = c.get("/api/lines").json()
    assert status["backbones"] == 1 and [ln["served"] for ln in status["lines"]] == [1, 1]
    assert "default-src 'none'" in r3.headers["content-security-policy"]
    page = c.get("/?q=scratch&line=line-4").text
    assert '<option value="line-4" selected>' in page and 'id="line-version">line line-4 · v1' in page
    assert "/photo/" in page and "?line=line-4" in page.split("/photo/")[1][:40]
    hit = r4.json()["images"][0]["image_id"]
    assert c.get(f"/api/photo/{hit}?line=line-4&top=2").headers["x-mwa-line"] == "line-4 v1"
    assert c.get("/").headers["x-mwa-line"] == "line-3 v1"  # a page without ?line: the first line


def test_line_errors_are_clear_and_follow_the_servers_rules(two_lines, sample):
    LineStore.open(two_lines).add("line-5", data_dir=sample.data)  # nothing published yet
    lines = LiveLines(two_lines, device="cpu")
    c = _client(lines)
    for url, code, words in [(Q, 400, "say which line"), (Q + "&line=nope", 404, "no line named 'nope'"),
                             (Q + "&line=line-5", 503, "line line-5 cannot answer yet: nothing is published")]:
        res = c.get(url)
        assert res.status_code == code and words in res.json()["error"], res.text
        assert res.json()["hint"] and res.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in res.headers["content-security-policy"]
    page = c.get("/?line=nope")
    assert page.status_code == 404 and "no line named" in page.text and "<script" not in page.text
    assert c.get(Q + "&line=nope", headers={"Host": "evil.example"}).status_code == 400  # the host guard first
    assert c.get(Q + "&line=line-3", headers={"Host": "evil.example"}).status_code == 400


def test_a_new_version_is_served_once_indexed_and_only_if_sound(two_lines, sample):
    lines = LiveLines(two_lines, device="cpu")
    c = _client(lines)
    before = _answer(c.get(Q + "&line=line-3"))
    publish(two_lines, "line-3", sample.good2, device="cpu")
    lines.refresh()
    res = c.get(Q + "&line=line-3")
    assert res.headers["x-mwa-line"] == "line-3 v1" and _answer(res) == before  # v2 has no index yet
    assert any("current version is v2" in w for w in res.json()["warnings"])
    line = c.get("/api/lines").json()["lines"][0]
    assert line["current"] == 2 and line["served"] == 1 and "has no index yet" in line["pending"]
    assert "has no index yet" in c.get("/?line=line-3").text
    index_line(two_lines, "line-3", device="cpu")
    lines.refresh()
    res = c.get(Q + "&line=line-3")
    assert res.headers["x-mwa-line"] == "line-3 v2" and _answer(res) != before and res.json()["warnings"] == []
    v2 = _answer(res)
    # v3 indexed, then damaged before the server looks: v2 keeps answering, the reason is shown
    publish(two_lines, "line-3", sample.bad, device="cpu", force_worse=True, why="trial")
    index_line(two_lines, "line-3", device="cpu")
    weights = two_lines / "line-3" / "v3" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    lines.refresh()
    res = c.get(Q + "&line=line-3")
    assert res.headers["x-mwa-line"] == "line-3 v2" and _answer(res) == v2
    assert "damaged" in c.get("/api/lines").json()["lines"][0]["last_error"]


def test_an_index_built_with_another_adapter_is_not_served(two_lines, sample):
    from mwa_cli.search.build import build_index

    lines = LiveLines(two_lines, device="cpu")
    publish(two_lines, "line-3", sample.good2, device="cpu")
    index_line(two_lines, "line-3", device="cpu")
    v2_index = two_lines / "line-3" / "v2" / "index"
    meta = json.loads((v2_index / "index.json").read_text())
    build_index(sample.photos, sample.good1, v2_index, device="cpu", rebuild=True, line=meta["line"])
    lines.refresh()
    status = lines.status()["lines"][0]
    assert status["served"] == 1 and "not with v2 of the line" in status["last_error"]


def test_bad_start_ups_fail_clearly(store, sample, tmp_path):
    with pytest.raises(MwaError, match="no line store") as exc:
        LiveLines(tmp_path / "none", device="cpu")
    assert exc.value.exit_code == EXIT_DATA
    LineStore.create(store).add("line-3", data_dir=sample.data)
    publish(store, "line-3", sample.good1, device="cpu")
    with pytest.raises(MwaError, match="no line of .* can answer yet .*line-3: v1 is current but has no index"):
        LiveLines(store, device="cpu")
    res = runner.invoke(app, ["serve", "--lines", str(tmp_path / "none"), "--port", "8125"])
    assert res.exit_code == 3 and "no line store" in " ".join(res.output.split())
    res = runner.invoke(app, ["serve", "--lines", str(store), "--index", str(tmp_path), "--port", "8125"])
    assert res.exit_code == 2 and "exactly one of --index" in " ".join(res.output.split())
    res = runner.invoke(app, ["serve", "--port", "8125"])
    assert res.exit_code == 2
    shutil.rmtree(store)
