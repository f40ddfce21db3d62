"""Runs that came from `mwa tune`: the report links the tune's page (relative to the report) and says whether the
comparison is between two tuned methods."""

from __future__ import annotations

import io
import json

from rich.console import Console

from mwa_cli.report.api import make_report
from mwa_cli.report.console import print_report
from tests.helpers.report_builder import make_data_dir, make_run


def _tune_folder(root, name):
    folder = root / name
    (folder / "trials").mkdir(parents=True)
    (folder / "tune.json").write_text(json.dumps({"kind": "mwa tune"}), encoding="utf-8")
    (folder / "tune.html").write_text("<html></html>", encoding="utf-8")
    return folder


def _mark_tuned(run, folder):
    cfg = json.loads((run / "config.json").read_text())
    cfg["tune"] = str(folder)
    (run / "config.json").write_text(json.dumps(cfg), encoding="utf-8")


def test_two_tuned_methods_are_said_so_and_the_page_is_linked(tmp_path):
    data = make_data_dir(tmp_path)
    tune = _tune_folder(tmp_path / "runs", "tune-mwa-vs-full-ft")
    mwa = make_run(tune / "trials", "mwa-t003", "mwa", data)  # a trial: found by where it lies
    ft = make_run(tmp_path / "runs", "full-ft-rec", "full-ft", data, recall=40.0)
    _mark_tuned(ft, tune)  # trained from the recommended config: found by its config.json
    rep = make_report([mwa, ft], out=tmp_path / "runs" / "report.html")
    assert rep["tunes"] == [{"page": str((tune / "tune.html").resolve()), "runs": ["mwa-t003", "full-ft-rec"]}]
    assert any("the comparison is between two tuned methods" in n for n in rep["notes"])
    html = (tmp_path / "runs" / "report.html").read_text(encoding="utf-8")
    assert 'href="tune-mwa-vs-full-ft/tune.html"' in html
    out = io.StringIO()
    print_report(rep, Console(file=out, width=200))
    assert f"Tuning trials and the chosen configuration: {(tune / 'tune.html').resolve()}" in out.getvalue()


def test_a_tuned_method_against_an_untuned_baseline_says_what_to_tune(tmp_path):
    data = make_data_dir(tmp_path)
    tune = _tune_folder(tmp_path, "tune-mwa")
    mwa = make_run(tmp_path / "runs", "mwa-rec", "mwa", data)
    _mark_tuned(mwa, tune)
    ft = make_run(tmp_path / "runs", "full-ft", "full-ft", data)
    rep = make_report([mwa, ft], write=False)
    assert any("mwa-rec comes from `mwa tune`, full-ft does not: tune full-ft too" in n for n in rep["notes"])


def test_runs_without_a_tune_get_no_link_and_no_note(tmp_path):
    data = make_data_dir(tmp_path)
    mwa = make_run(tmp_path / "runs", "mwa", "mwa", data)
    ft = make_run(tmp_path / "runs", "full-ft", "full-ft", data)
    _mark_tuned(mwa, tmp_path / "gone")  # a tune folder that no longer exists: nothing to link
    rep = make_report([mwa, ft], out=tmp_path / "runs" / "report.html")
    assert rep["tunes"] == [] and not any("mwa tune" in n for n in rep["notes"])
    assert "tune.html" not in (tmp_path / "runs" / "report.html").read_text(encoding="utf-8")
