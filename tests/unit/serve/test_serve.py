"""`mwa serve`: a real server process on 127.0.0.1 (Uvicorn), its JSON API and security rules, 200 queries from 8
concurrent clients, an index updated by `mwa index` while it serves, and headless Chromium typing a query and
following a link (driven through the DevTools protocol). Bad start-up options fail before anything loads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.search.build import build_index
from tests.e2e.test_report_browser import CHROMIUM
from tests.helpers.paths import REPO
from tests.unit.search.test_index import _make_run, _photo

XSS_CAPTION = 'dent <script>document.title="PWNED"</script><img src=x onerror="document.title=\'RANIMG\'">'
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, *, host: str | None = None, method: str = "GET", lang: str | None = None
        ) -> tuple[int, dict, bytes]:
    headers = {**({"Host": host} if host else {}), **({"Accept-Language": lang} if lang else {})}
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def make_index(root: Path) -> tuple[Path, Path, Path]:
    """A run, 6 photos, a caption set naming them (one caption is an XSS attempt) and the index."""
    run = _make_run(root / "run")
    photos = root / "photos"
    for i in range(6):
        _photo(photos / f"p{i}.png", i)
    data = root / "data"
    data.mkdir()
    ids = [hashlib.sha256((photos / f"p{i}.png").read_bytes()).hexdigest()[:16] for i in range(6)]
    caps = ["a scratch on the upper left", XSS_CAPTION, "右上に傷", "a crack near the weld", "rust stain", "a hole"]
    pd.DataFrame({"image_id": ids, "path": [f"p{i}.png" for i in range(6)], "caption": caps,
                  "label": ["scratch", "dent", "scratch", "crack", "rust", "hole"], "split": "test",
                  "width": 40, "height": 30}).to_csv(data / "manifest.csv", index=False)
    (data / "dataset.json").write_text(json.dumps({"schema_version": 1, "source": str(photos),
                                                   "dataset_hash": "h"}))
    build_index(photos, run, root / "idx", captions_dir=data, device="cpu")
    return run, photos, root / "idx"


class Server:
    """`python -m mwa_cli serve` in a subprocess (`what` = --index or --lines), stopped with SIGINT (Ctrl-C) by its
    own pid."""

    def __init__(self, index: Path, *extra: str, what: str = "--index"):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "mwa_cli", "serve", what, str(index), "--port",
                                      str(self.port), "--device", "cpu", *extra], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mwa serve exited: {self.proc.communicate()[1][-2000:]}")
            try:
                if get(self.base + ("/api/lines" if what == "--lines" else "/api/status"))[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError("mwa serve did not answer within 120 s")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.communicate()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    run, photos, index = make_index(root)
    server = Server(index)
    yield server, run, photos, index
    err = server.stop()
    assert server.proc.returncode == 0, err[-2000:]  # Ctrl-C stops it cleanly
    assert "Traceback" not in err


def test_json_api_and_security_rules(served):
    server, _, _, _ = served
    code, headers, body = get(server.base + "/api/search?q=" + urllib.parse.quote("右上に傷") + "&top=3")
    assert code == 200
    res = json.loads(body)
    assert len(res["images"]) == 3 and res["query"] == {"kind": "text", "text": "右上に傷"}
    assert "default-src 'none'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    hit = res["images"][0]["image_id"]
    code, _, body = get(f"{server.base}/api/photo/{hit}?top=2")
    photo = json.loads(body)
    assert code == 200 and photo["images"][0]["image_id"] == hit and len(photo["captions"]) == 2
    code, _, body = get(server.base + "/api/search?q=crack&heatmap=true&top=1")
    assert code == 200 and json.loads(body)["images"][0]["heat"]["method"] == "occlusion"
    status = json.loads(get(server.base + "/api/status")[2])
    assert status["images"] == 6 and status["captions"] == 6
    # read-only, clear errors, nothing else served
    assert get(server.base + "/api/search?q=x", method="POST")[0] == 405
    assert get(server.base + "/api/search?q=x", method="DELETE")[0] == 405
    code, _, body = get(server.base + "/api/photo/0123456789abcdef")
    assert code == 404 and "no photo with id" in json.loads(body)["error"]
    code, _, body = get(server.base + "/api/search?q=x&top=0")
    assert code == 400 and "top must be" in json.loads(body)["error"]
    code, _, body = get(server.base + "/api/search?q=" + "x" * 600)
    assert code == 400 and "longer than" in json.loads(body)["error"]
    assert get(server.base + "/api/search?q=%20")[0] == 400
    assert get(server.base + "/docs")[0] == 404 and get(server.base + "/../etc/passwd")[0] == 404
    # another host name (a web page rebinding its DNS to 127.0.0.1) is not answered
    code, headers, _ = get(server.base + "/api/status", host="evil.example")
    assert code == 400 and headers["x-frame-options"] == "DENY"  # the refusal carries the rules too
    # the page escapes captions from the data and shows an error page for a bad id
    code, headers, body = get(server.base + "/?q=dent&top=6")
    html = body.decode()
    assert code == 200 and "&lt;script&gt;document.title=" in html and "<script" not in html
    assert "default-src 'none'" in headers["content-security-policy"]
    code, _, body = get(server.base + "/photo/nothere")
    assert code == 404 and "no photo with id" in body.decode()
    # the page's words follow the browser's language
    ja = get(server.base + "/?q=dent&top=2", lang="ja-JP,ja;q=0.9,en;q=0.8")[2].decode()
    assert '<html lang="ja">' in ja and "近い写真" in ja and "検索" in ja
    en = get(server.base + "/?q=dent&top=2", lang="en-GB,en;q=0.9,ja;q=0.5")[2].decode()
    assert '<html lang="en">' in en and "Nearest photos" in en


def test_language_choice():
    from mwa_cli.serve.labels import LABELS, pick_language

    assert pick_language("ja,en;q=0.8") == "ja" and pick_language("en-US,ja;q=0.5") == "en"
    assert pick_language(None) == "en" and pick_language("fr-FR") == "en"
    assert LABELS["ja"].keys() == LABELS["en"].keys()


def test_200_queries_from_8_concurrent_clients(served):
    server, _, _, _ = served
    words = ["a scratch on the upper left", "右上に傷", "crack near the weld", "rust", "穴", "dent", "hole", "錆"]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for j in range(25):
            q = urllib.parse.quote(words[(k + j) % len(words)])
            t0 = time.perf_counter()
            try:
                code, _, body = get(f"{server.base}/api/search?q={q}&top=5")
                ok = code == 200 and len(json.loads(body)["images"]) == 5
            except OSError as exc:
                ok, code = False, str(exc)
            with lock:
                latencies.append(time.perf_counter() - t0)
                if not ok:
                    failures.append(f"{code}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(latencies) == 200 and failures == []
    latencies.sort()
    print(f"serve: 200 queries, 8 clients, p95 {latencies[int(0.95 * 199)] * 1000:.0f} ms (tiny model; "
          "bench/bench_serve.py measures beit3-mini)")


@pytest.mark.slow
def test_index_updated_while_serving_is_picked_up(tmp_path):
    run, photos, index = make_index(tmp_path)
    server = Server(index, "--no-heatmaps")
    try:
        errors: list[int] = []
        stop = threading.Event()

        def keep_asking() -> None:
            while not stop.is_set():
                code = get(server.base + "/api/search?q=scratch&top=3")[0]
                if code != 200:
                    errors.append(code)

        t = threading.Thread(target=keep_asking)
        t.start()
        _photo(photos / "new" / "added.png", 99)
        (photos / "p5.png").unlink()
        build_index(photos, run, index, device="cpu")  # what `mwa index` does
        deadline = time.monotonic() + 30
        while json.loads(get(server.base + "/api/status")[2])["reloads"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        t.join()
        status = json.loads(get(server.base + "/api/status")[2])
        assert status["reloads"] == 1 and status["images"] == 6 and status["last_reload_error"] is None
        assert errors == []  # no query failed while the index was rewritten
        new_id = hashlib.sha256((photos / "new" / "added.png").read_bytes()).hexdigest()[:16]
        code, _, body = get(f"{server.base}/api/photo/{new_id}?top=1")
        assert code == 200 and json.loads(body)["images"][0]["path"] == "new/added.png"
        # a damaged generation leaves the last good one in service
        (index / "index.json").write_text("{ not json", encoding="utf-8")
        time.sleep(1.2)
        code, _, body = get(server.base + "/api/search?q=scratch&top=2")
        assert code == 200 and len(json.loads(body)["images"]) == 2
        assert json.loads(get(server.base + "/api/status")[2])["last_reload_error"]
    finally:
        server.stop()


def test_bad_start_up_fails_clearly(tmp_path, served):
    server, _, _, index = served
    res = runner.invoke(app, ["serve", "--index", str(index), "--port", str(server.port)])
    assert res.exit_code == 2 and "already in use" in " ".join(res.output.split())
    res = runner.invoke(app, ["serve", "--index", str(tmp_path / "nothing")])
    assert res.exit_code == 3 and "no index" in " ".join(res.output.split())
    res = runner.invoke(app, ["serve", "--index", str(index), "--port", "70000"])
    assert res.exit_code == 2 and "--port" in res.output
    res = runner.invoke(app, ["serve", "--index", str(index), "--host", "no-such-host.invalid", "--port", "8123"])
    assert res.exit_code == 2 and "not an address" in " ".join(res.output.split())


# ------------------------------------------------------------------------------------------------ real browser
class DevTools:
    """A minimal Chrome DevTools Protocol client over the page's WebSocket."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")

    def click(self, selector: str) -> None:
        box = self.js(f"JSON.stringify(document.querySelector({json.dumps(selector)}).getBoundingClientRect())")
        rect = json.loads(box)
        box = [rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2]
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


@contextlib.contextmanager
def browser_page(url: str, profile: Path) -> Iterator[DevTools]:
    """Headless Chromium showing `url`, driven through its DevTools endpoint; stopped by its own pid afterwards."""
    from websockets.sync.client import connect

    port = free_port()
    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                "--disable-dev-shm-usage", f"--remote-debugging-port={port}",
                                "--remote-allow-origins=*", f"--user-data-dir={profile}", "--window-size=1200,900",
                                url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        pages: list = []
        while time.monotonic() < deadline and not pages:
            try:
                pages = [p for p in json.loads(get(f"http://127.0.0.1:{port}/json/list")[2]) if p["type"] == "page"]
            except OSError:
                time.sleep(0.3)
        assert pages, "chromium's DevTools endpoint did not come up"
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            yield DevTools(ws)
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; .ci/run "
                                              "installs it): real-browser check skipped")
def test_browser_types_a_query_sees_results_and_follows_a_link(served, tmp_path):
    pytest.importorskip("websockets", reason="websockets drives the browser (installed by .[dev])")
    server, _, _, _ = served
    with browser_page(server.base + "/", tmp_path / "profile") as dt:
        dt.wait_for("document.readyState === 'complete' && !!document.querySelector('input[name=q]')")
        # type a query the way a person does, and press Enter
        dt.js("document.querySelector('input[name=q]').focus()")
        dt.call("Input.insertText", text="dent")
        for kind in ("keyDown", "keyUp"):
            dt.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                    text="\r" if kind == "keyDown" else "")
        dt.wait_for("location.search.includes('q=dent') && document.querySelectorAll('#results .card').length > 0")
        n_cards = dt.js("document.querySelectorAll('#results .card').length")
        assert n_cards == 6
        assert dt.js("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
        assert dt.js("document.querySelectorAll('#results img.heat').length") >= 1  # why this match
        # the caption from the data is text, and its script never ran
        assert "<script>" in dt.js("document.body.innerText")
        assert dt.js("document.title") not in ("PWNED", "RANIMG")
        # follow the first result's link: similar photos and the closest captions
        dt.click("#results .card a")
        dt.wait_for("location.pathname.startsWith('/photo/') && !!document.querySelector('#captions')")
        assert dt.js("document.querySelectorAll('#results .card').length") == 6
        assert dt.js("document.querySelector('h1').innerText").startswith("Photos like")
