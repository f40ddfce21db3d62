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
from test_report_builder import XSS, standard_runs

from mwa_cli.report.api import make_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian package `chromium`; .ci/run installs it): real-browser check skipped",
)
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
