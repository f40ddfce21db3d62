"""Real-browser check of the HTML report in headless Chromium (Debian package `chromium`, installed by .ci/run):
the page renders (the screenshot is not blank) and no script from the data runs. Skips, saying why, only when
chromium is not installed. Set MWA_REPORT_SHOTS=<dir> to keep the screenshots for a look."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mwa_cli.report.api import make_report
from tests.helpers.report_builder import XSS, standard_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian package `chromium`; .ci/run installs it): real-browser check skipped",
)]
MARKERS = ("PWNED", "RANXSS", "RANIMG")


def chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def screenshot(tmp_path: Path, html: Path, name: str, size: str) -> np.ndarray:
    from PIL import Image

    png = tmp_path / name
    res = chromium(tmp_path, html.as_uri(), f"--screenshot={png}", f"--window-size={size}",
                   "--hide-scrollbars")
    assert png.is_file(), f"no screenshot: {res.stderr[-2000:]}"
    if os.environ.get("MWA_REPORT_SHOTS"):
        Path(os.environ["MWA_REPORT_SHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(os.environ["MWA_REPORT_SHOTS"]) / name)
    return np.asarray(Image.open(png).convert("L"), dtype=np.float32)


def test_detector_works_on_a_page_that_does_run_the_script(tmp_path):
    """Control: the same payload placed raw in a page DOES run, so the marker check below can see it."""
    page = tmp_path / "control.html"
    page.write_text(f"<!DOCTYPE html><html><head><title>t</title></head><body>{XSS}</body></html>",
                    encoding="utf-8")
    dom = chromium(tmp_path, page.as_uri(), "--dump-dom", "--virtual-time-budget=3000").stdout
    assert "RANXSS" in dom and "RANIMG" in dom


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_report_renders_and_no_data_script_runs(tmp_path, lang):
    _, runs = standard_runs(tmp_path)
    make_report([], runs, lang=lang)
    html = runs / "report.html"
    dom = chromium(tmp_path, html.as_uri(), "--dump-dom", "--virtual-time-budget=3000").stdout
    assert "<table" in dom, "the page did not load"
    for m in MARKERS:
        assert m not in dom, f"a script from the data ran (found {m})"
    assert "&lt;script&gt;document.title=" in dom  # the caption is shown as text
    img = screenshot(tmp_path, html, f"report_{lang}.png", "1200,2000")
    assert img.std() > 12, "screenshot looks blank"
    assert (img < 200).mean() > 0.02, "almost nothing drawn"
    phone = screenshot(tmp_path, html, f"report_{lang}_phone.png", "390,1600")
    assert phone.std() > 12


# ---- layout at phone and desktop widths, measured in the browser ---------------------------------------------
SAMPLE_LABELS = ["crack", "dent", "hole", "misalignment", "missing_part", "no_defect", "rust", "scratch"]
# Runs in a copy of the report whose CSP is lifted for this one script (the report itself runs no script): it
# writes its measurements into the DOM, which --dump-dom prints.
MEASURE = """<script>
addEventListener('load', () => {
  const vw = document.documentElement.clientWidth, out = {vw, pageWidth: document.documentElement.scrollWidth,
        cut: [], small: [], overlaps: [], charts: 0, texts: 0};
  const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  for (const table of document.querySelectorAll('table')) {
    if (!visible(table) || table.getBoundingClientRect().right <= vw + 0.5) continue;
    let box = table.parentElement, ok = false;
    for (; box && box !== document.body; box = box.parentElement) {
      const ox = getComputedStyle(box).overflowX;
      if ((ox === 'auto' || ox === 'scroll') && box.getBoundingClientRect().right <= vw + 0.5) { ok = true; break; }
    }
    const hint = ok && box.previousElementSibling && box.previousElementSibling.classList.contains('scrollhint')
                 && visible(box.previousElementSibling);
    if (!ok || !hint) out.cut.push(table.querySelector('th') ? table.querySelector('th').textContent : '?');
  }
  for (const svg of document.querySelectorAll('svg.chart')) {
    if (!visible(svg)) continue;
    out.charts++;
    const boxes = [];
    for (const t of svg.querySelectorAll('text')) {
      if (!visible(t) || !t.textContent.trim()) continue;
      out.texts++;
      const m = t.getScreenCTM(), px = parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b);
      if (px < 11) out.small.push([t.textContent.slice(0, 30), Math.round(px * 10) / 10]);
      const r = t.getBoundingClientRect();
      boxes.push([t.textContent.slice(0, 30), r.left, r.top, r.right, r.bottom]);
    }
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j], pad = 0.5;
      if (a[1] < b[3] - pad && b[1] < a[3] - pad && a[2] < b[4] - pad && b[2] < a[4] - pad)
        out.overlaps.push([svg.getAttribute('aria-label'), a[0], b[0]]);
    }
  }
  parent.postMessage(JSON.stringify(out), '*');
});
</script>"""
# The page at the given width: an iframe of that width (headless Chromium keeps its window at least 500 px wide),
# which posts its measurements to this page.
FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe src="{src}" style="width:{width}px;height:1200px;border:0"></iframe><pre id="measured"></pre>
<script>addEventListener('message', e => {{ document.getElementById('measured').textContent = e.data; }});</script>
</body></html>"""


def _layout(tmp_path, html: Path, width: int) -> dict:
    import json
    import re

    page = tmp_path / f"measure_{width}.html"
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html.read_text(encoding="utf-8"))
    page.write_text(text.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    frame = tmp_path / f"frame_{width}.html"
    frame.write_text(FRAME.format(src=page.name, width=width), encoding="utf-8")
    dom = chromium(tmp_path, frame.as_uri(), "--dump-dom", "--virtual-time-budget=5000",
                   f"--window-size={max(width, 1200) + 40},1300", "--hide-scrollbars").stdout
    found = re.search(r'<pre id="measured">(.+?)</pre>', dom, re.S)
    assert found, f"the measuring script did not run: {dom[-500:]}"
    import html as html_mod

    return json.loads(html_mod.unescape(found.group(1)))


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory) -> Path:
    """A report whose tables are too wide for a phone and whose per-label chart has the sample photos' labels."""
    from mwa_cli.report.html import write_html

    tmp = tmp_path_factory.mktemp("layout")
    _, runs = standard_runs(tmp)
    rep = make_report([], runs, write=False)
    for i, r in enumerate(rep["runs"]):
        r["per_label"] = {lab: {"mean_recall": 20.0 + 7 * j + 3 * i, "rsum": 6 * (20.0 + 7 * j)}
                          for j, lab in enumerate(SAMPLE_LABELS)}
    return write_html(rep, tmp / "report.html")


@pytest.mark.parametrize("width", [390, 1200])
def test_tables_scroll_with_a_cue_and_chart_text_is_readable_and_apart(tmp_path, wide_report, width):
    m = _layout(tmp_path, wide_report, width)
    assert m["vw"] == width, m["vw"]
    assert m["pageWidth"] <= width, "the page itself scrolls sideways"
    assert m["cut"] == [], f"tables cut at {width} px without a scroll container and a visible cue: {m['cut']}"
    assert m["charts"] >= 3 and m["texts"] > 40
    assert m["small"] == [], f"chart text below 11 px at {width} px: {m['small'][:8]}"
    assert m["overlaps"] == [], f"chart labels overlap at {width} px: {m['overlaps'][:8]}"


def test_the_layout_check_sees_a_cut_table_small_text_and_overlaps(tmp_path):
    """Control: the same measurements flag a page that has each of the three faults."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width"></head><body>'
                    '<div style="overflow:hidden"><table style="width:900px"><tr><th>wide</th></tr></table></div>'
                    '<svg class="chart" viewBox="0 0 640 100" style="width:300px"><text x="10" y="50" font-size="13">'
                    'misalignment</text><text x="40" y="50" font-size="13">missing_part</text></svg></body></html>',
                    encoding="utf-8")
    m = _layout(tmp_path, page, 390)
    assert m["cut"] == ["wide"] and len(m["small"]) == 2 and len(m["overlaps"]) == 1
