"""The report under the label-level protocol: chosen when captions repeat, both protocols shown, verdict says so."""

from __future__ import annotations

import io
import json

from rich.console import Console

from mwa_cli.report.api import make_report
from mwa_cli.report.console import print_report
from mwa_cli.report.html import render_html
from mwa_cli.report.protocols import choose_primary_protocol
from tests.helpers.report_builder import standard_runs


def _add_label_level(run, r1: float, primary: str = "label_level") -> None:
    ev = json.loads((run / "eval.json").read_text())
    blk = {"r1": r1, "r5": min(100.0, r1 + 20), "r10": min(100.0, r1 + 30), "median_rank": 1.0}
    rsum = 2 * (blk["r1"] + blk["r5"] + blk["r10"])
    ev.update(instance_protocol="Instance level: own captions.", primary_protocol=primary,
              label_level={"key": "label", "protocol": "Label level: same label.", "i2t": blk, "t2i": blk,
                           "rsum": rsum, "mean_recall": rsum / 6, "chance": {"i2t_r1": 12.5, "t2i_r1": 12.5},
                           "per_label": {"scratch": {"n_images": 2, "n_captions": 4, "i2t": blk, "t2i": blk,
                                                     "rsum": rsum, "chance": {"i2t_r1": 12.5, "t2i_r1": 12.5}}}})
    (run / "eval.json").write_text(json.dumps(ev))


def test_label_level_is_primary_when_captions_repeat(tmp_path):
    _, runs = standard_runs(tmp_path)
    _add_label_level(runs / "full-ft", 80.0)
    _add_label_level(runs / "mwa", 40.0)
    _add_label_level(runs / "lora", 30.0)
    rep = make_report([], runs, write=False)
    assert rep["primary_protocol"] == "label_level"
    mwa = next(r for r in rep["runs"] if r["name"] == "mwa")
    ll_kept = 100 * (2 * (40 + 60 + 70)) / (2 * (80 + 100 + 100))
    assert abs(mwa["rsum_kept_pct"] - ll_kept) < 1e-9  # the verdict's number is label level
    inst = mwa["by_protocol"]["instance"]
    assert inst["rsum_kept_pct"] > 90 and abs(mwa["by_protocol"]["label_level"]["rsum_kept_pct"] - ll_kept) < 1e-9
    assert "label level" in rep["verdict"] and rep["protocols"]["label_level"] == "Label level: same label."
    assert set(mwa["per_label"]) == {"scratch"}
    buf = io.StringIO()
    print_report(rep, Console(file=buf, width=160, force_terminal=False))
    text = buf.getvalue()
    assert "Retrieval quality (label level, used for the verdict)" in text
    assert "Retrieval quality (instance level)" in text
    html = render_html(rep)
    assert "label level, used for the verdict" in html and "Instance level: own captions." in html


def test_instance_stays_primary_without_repeats_or_label_numbers(tmp_path):
    _, runs = standard_runs(tmp_path)
    rep = make_report([], runs, write=False)  # old eval.json files: no label_level at all
    assert rep["primary_protocol"] == "instance" and "label level" not in rep["verdict"]
    buf = io.StringIO()
    print_report(rep, Console(file=buf, width=160, force_terminal=False))
    assert "Retrieval quality" in buf.getvalue() and "instance level" not in buf.getvalue()
    assert choose_primary_protocol([{"i2t": {}, "primary_protocol": "instance", "label_level": {}}]) == "instance"
    assert choose_primary_protocol([{"i2t": {}, "primary_protocol": "label_level", "label_level": {}},
                                    {"i2t": {}}]) == "instance"  # a run without label-level numbers
