"""`mwa serve --lines`: a real server process (Uvicorn on 127.0.0.1) over a line store of two lines, hammered by
concurrent clients of both lines while one line is switched to a new version (publish, index) and back (rollback)
with no failed request and no answer that mixes versions; headless Chromium choosing a line on the page; the
line report rendered in the browser."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from mwa_cli.lines.index import index_line
from mwa_cli.lines.publish import publish, rollback
from mwa_cli.lines.store import LineStore
from tests.e2e.test_report_browser import CHROMIUM, chromium
from tests.helpers.line_store import make_sample
from tests.unit.serve.test_serve import Server, browser_page, get

pytestmark = pytest.mark.slow
TEXTS = ["a large scratch on the upper right of a brushed metal plate", "a hole in the centre of a wooden board"]
CLIENTS = 6
MAX_REQUESTS = 400  # per client: the load is bounded in count as well as in time
MAX_SECONDS = 240


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_lines")
    sample = make_sample(root)
    store = root / "lines"
    st = LineStore.create(store)
    for name, run in (("line-3", sample.good1), ("line-4", sample.bad)):
        st.add(name, data_dir=sample.data)
        publish(store, name, run, device="cpu")
        index_line(store, name, sample.photos, device="cpu")
    server = Server(store, "--no-heatmaps", what="--lines")
    yield server, store, sample
    err = server.stop()
    assert server.proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err


def _lines(server) -> dict:
    return {ln["name"]: ln for ln in json.loads(get(server.base + "/api/lines")[2])["lines"]}


def _wait_served(server, line: str, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _lines(server)[line]["served"] != version:
        assert time.monotonic() < deadline, f"{line} v{version} not served: {_lines(server)[line]}"
        time.sleep(0.2)


def test_switch_under_load_fails_no_request_and_never_mixes_versions(served):
    server, store, sample = served
    answers: dict[tuple[str, str], set] = {}
    served_count: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    t_end = time.monotonic() + MAX_SECONDS

    def client(k: int) -> None:
        line = ("line-3", "line-4")[k % 2]
        for j in range(MAX_REQUESTS):
            if stop.is_set() or time.monotonic() > t_end:
                return
            text = TEXTS[j % len(TEXTS)]
            try:
                code, headers, body = get(f"{server.base}/api/search?line={line}&top=5&q={urllib.parse.quote(text)}")
                ok = code == 200
            except OSError as exc:
                code, ok = str(exc), False
            with lock:
                if not ok:
                    failures.append(f"{line}: {code}")
                    continue
                served_count.append(1)
                hits = tuple((h["path"], round(h["score"], 5)) for h in json.loads(body)["images"])
                answers.setdefault((headers["x-mwa-line"], text), set()).add(hits)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        publish(store, "line-3", sample.good2, device="cpu")   # current v2, not indexed yet: v1 keeps answering
        time.sleep(2)
        assert _lines(server)["line-3"]["served"] == 1 and "no index yet" in _lines(server)["line-3"]["pending"]
        index_line(store, "line-3", device="cpu")
        _wait_served(server, "line-3", 2)
        time.sleep(2)
        rollback(store, "line-3", why="back under load")        # v1 is indexed: taken up at once
        _wait_served(server, "line-3", 1)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert failures == []
    seen = {tag for tag, _ in answers}
    assert seen == {"line-3 v1", "line-3 v2", "line-4 v1"}, seen
    for key, variants in answers.items():
        assert len(variants) == 1, f"{key} was answered {len(variants)} different ways (a mixed version?)"
    for text in TEXTS:
        v1, v2, other = (answers[(tag, text)] for tag in ("line-3 v1", "line-3 v2", "line-4 v1"))
        assert v1 != v2 and v1 != other  # two versions, two lines: different adapters, different answers
    assert len(served_count) > 100
    print(f"serve --lines: {CLIENTS} clients, {len(served_count)} requests, 0 failed across two switches")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; .ci/run "
                                              "installs it): real-browser check skipped")
def test_browser_chooses_a_line_and_keeps_it_when_following_a_link(served, tmp_path):
    pytest.importorskip("websockets", reason="websockets drives the browser (installed by .[dev])")
    server, _, _ = served
    with browser_page(server.base + "/", tmp_path / "profile") as dt:
        dt.wait_for("document.readyState === 'complete' && !!document.querySelector('select[name=line]')")
        current = _lines(server)["line-4"]["served"]
        assert dt.js("[...document.querySelectorAll('select[name=line] option')].map(o => o.value).join()") == \
            "line-3,line-4"
        # choose line-4 in the list with the keyboard, type a query, press Enter
        dt.js("document.querySelector('select[name=line]').focus()")
        for kind in ("keyDown", "keyUp"):
            dt.call("Input.dispatchKeyEvent", type=kind, key="ArrowDown", code="ArrowDown", windowsVirtualKeyCode=40)
        assert dt.js("document.querySelector('select[name=line]').value") == "line-4"
        dt.js("document.querySelector('input[name=q]').focus()")
        dt.call("Input.insertText", text="a hole")
        for kind in ("keyDown", "keyUp"):
            dt.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                    text="\r" if kind == "keyDown" else "")
        dt.wait_for("location.search.includes('line=line-4') && document.querySelectorAll('#results .card')"
                    ".length > 0")
        assert dt.js("document.querySelector('#line-version').innerText") == f"line line-4 · v{current}"
        assert dt.js("document.querySelector('select[name=line]').value") == "line-4"
        assert dt.js("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
        dt.click("#results .card a")
        dt.wait_for("location.pathname.startsWith('/photo/')")
        assert "line=line-4" in dt.js("location.search")
        assert dt.js("document.querySelector('#line-version').innerText").startswith("line line-4")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: real-browser check skipped")
def test_line_report_renders_in_the_browser(served, tmp_path):
    from mwa_cli.lines.report import write_line_report
    from mwa_cli.lines.view import describe_line

    _, store, _ = served
    html = write_line_report(describe_line(store, "line-3"), tmp_path / "line3.html")
    dom = chromium(tmp_path, Path(html).as_uri(), "--dump-dom", "--virtual-time-budget=3000").stdout
    assert 'id="versions"' in dom and "<svg" in dom and "v1" in dom
    png = tmp_path / "line3.png"
    chromium(tmp_path, Path(html).as_uri(), f"--screenshot={png}", "--window-size=1200,1400", "--hide-scrollbars")
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert img.std() > 12 and (img < 200).mean() > 0.01
