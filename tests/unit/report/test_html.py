"""The HTML file: user data escaped, self-contained (no request of any kind), thumbnails, plots, languages."""

from __future__ import annotations

import re
import shutil

from mwa_cli.report import svg
from mwa_cli.report.api import make_report
from mwa_cli.report.build import build_report, open_data_dir
from mwa_cli.report.collect import collect
from mwa_cli.report.html import render_html
from tests.helpers.report_builder import XSS, make_data_dir, make_run, standard_runs


def _html(tmp_path, **kw):
    _, runs = kw.pop("runs_pair", None) or standard_runs(tmp_path)
    rep = make_report([], runs, **kw)
    return rep, (runs / "report.html").read_text(encoding="utf-8")


def test_caption_with_script_appears_as_text(tmp_path):
    rep, html = _html(tmp_path)
    assert XSS not in html
    assert "<script" not in html.lower()  # no script element at all, ours or the data's
    assert "&lt;script&gt;document.title=" in html  # the caption is there, as text
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_labels_and_run_names_are_escaped_in_svg_and_tables(tmp_path):
    data = make_data_dir(tmp_path)
    runs = tmp_path / "runs"
    make_run(runs, "full-ft", "full-ft", data, recall=60)
    evil = make_run(runs, "mwa-<b>x<i>", "mwa", data, recall=55, wall_s=1000)
    import json

    ev = json.loads((evil / "eval.json").read_text())
    ev["per_label"]['<img src=x onerror="alert(1)">'] = ev["per_label"].pop("dent")
    (evil / "eval.json").write_text(json.dumps(ev))
    make_report([], runs)
    html = (runs / "report.html").read_text(encoding="utf-8")
    assert "<b>x" not in html and "mwa-&lt;b&gt;x&lt;i&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    assert 'onerror="alert' not in html


def test_self_contained_no_external_requests(tmp_path):
    _, html = _html(tmp_path)
    # the only URL allowed is the SVG namespace identifier (not a request)
    text = re.sub(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", "DATA", html)
    urls = set(re.findall(r"(?:[a-z]+:)?//[\w.-]+[^\s\"')<]*", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    for bad in ("<link", "@import", "<iframe", "<object", "<embed", "srcset", "<script", "url(http"):
        assert bad not in html.lower()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert "Noto Sans CJK JP" in html and "Hiragino Sans" in html and "Yu Gothic" in html
    assert "@page { size: A4" in html and "@media (max-width: 720px)" in html and "@media print" in html


def test_content_sections_and_plots(tmp_path):
    rep, html = _html(tmp_path)
    for text in ("Retrieval quality", "Training cost", "Yearly cost (ROI)", "Assumptions", "Charts",
                 "Retrieval examples", "Provenance", "GPU-hours", "97.4 %", "-12.0",
                 "60 % less", "Full-FT RSUM kept", "NVIDIA H100 80GB HBM3", "2.11.0 / 0.1.0",
                 "--method mwa --backbone beit3-mini --budget 1h", rep["dataset"]["hash"][:16],
                 "2.5 USD per GPU-hour", "(--lines)", "(--retrains-per-year)", "1 · correct"):
        assert text in html, text
    # recall vs time, loss curves, per-label bars: each drawn for wide screens and for phones
    assert html.count('class="chart wide"') == html.count('class="chart narrow"') == 3
    assert "Recall vs training time" in html and "Training loss" in html and "Mean recall per label" in html
    assert '<span class="est">' not in html  # nothing estimated here


def test_thumbnails_fall_back_to_photos_without_cache(tmp_path):
    data = make_data_dir(tmp_path, cache=False, photos=True)
    runs = tmp_path / "runs"
    make_run(runs, "full-ft", "full-ft", data)
    make_run(runs, "mwa", "mwa", data, wall_s=1000)
    make_report([], runs)
    html = (runs / "report.html").read_text(encoding="utf-8")
    assert "data:image/jpeg;base64," in html
    # and without any image: placeholders, still a valid report
    shutil.rmtree(tmp_path / "photos")
    coll = collect([], runs)
    rep = build_report(coll)
    html = render_html(rep, open_data_dir(coll.runs))
    assert 'class="noimg"' in html and "data:image/jpeg" not in html


def test_missing_data_dir_still_renders(tmp_path):
    data, runs = standard_runs(tmp_path)
    shutil.rmtree(data)
    rep, html = _html(tmp_path, runs_pair=(data, runs))
    assert "Thumbnails unavailable" in html and rep["dataset"]["images"] is None


def test_estimated_figures_marked_in_html(tmp_path):
    from tests.unit.report.test_build import fake_measure

    _, runs = standard_runs(tmp_path, with_full_ft=False)
    rep, html = _html(tmp_path, runs_pair=(None, runs), estimate=True, measure=fake_measure([]))
    assert html.count('<span class="est">estimated</span>') >= 10
    assert "Fake GPU" in html and "--method full-ft" in html


def test_no_full_ft_html_prints_the_command(tmp_path):
    _, runs = standard_runs(tmp_path, with_full_ft=False)
    rep, html = _html(tmp_path, runs_pair=(None, runs))
    assert "No full fine-tuning run was found" in html
    assert "--method full-ft" in html and "--estimate" in html


def test_japanese_report(tmp_path):
    rep, html = _html(tmp_path, lang="ja")
    assert '<html lang="ja">' in html
    for text in ("検索精度", "学習コスト", "年間コスト", "前提条件", "GPU時間", "結論"):
        assert text in html, text
    assert "左上に長い傷" in html  # data stays as it is


def test_svg_helpers():
    assert svg.nice_ticks(0, 9.3)[0] == 0 and svg.nice_ticks(0, 9.3)[-1] >= 9.3
    s = svg.scatter([{"label": "<a&b>", "x": 1.0, "y": 50.0, "color": "#000"}], title="t<", xlabel="x",
                    ylabel="y", empty="none")
    assert "&lt;a&amp;b&gt;" in s and "<a&b>" not in s and "t&lt;" in s
    assert "none" in svg.lines([], title="t", xlabel="x", ylabel="y", empty="none")
    b = svg.grouped_bars(["g1"], [{"label": "m", "color": "#000", "values": [120.0]}], title="t", ylabel="y",
                         empty="e")
    assert "<rect" in b


def test_runs_without_topk_or_metrics_still_render(tmp_path):
    data = make_data_dir(tmp_path)
    runs = tmp_path / "runs"
    make_run(runs, "full-ft", "full-ft", data, topk=False)
    mwa = make_run(runs, "mwa", "mwa", data, topk=False, wall_s=1000)
    (mwa / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 1.0}\n{"kind": "tra', encoding="utf-8")
    (runs / "full-ft" / "metrics.jsonl").unlink()
    rep = make_report([], runs)
    html = (runs / "report.html").read_text(encoding="utf-8")
    assert "this run has no eval_topk.json" in html
    assert rep["runs"][1]["loss_curve"] == {"x": "step", "points": [[1.0, 1.0]]}
    assert rep["runs"][0]["loss_curve"]["points"] == []
