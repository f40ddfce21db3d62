"""`mwa report` through the Typer app: terminal summary, --json, errors, options."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mwa_cli.cli import app
from tests.helpers.report_builder import make_run, standard_runs

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["report", *map(str, args)], env={"COLUMNS": "160"})


def test_terminal_summary_and_default_html(tmp_path):
    _, runs = standard_runs(tmp_path)
    res = invoke("--runs", runs, "--compare", "full-ft")
    assert res.exit_code == 0, res.output
    out = res.output
    for text in ("Retrieval quality", "Training cost", "Yearly cost", "97.4 %", "-12.0", "GPU-hours",
                 "60 % less", "-180 USD", "too few to tell MWA from full fine-tuning", "report.html"):
        assert text in out, text
    assert (runs / "report.html").is_file()


def test_json_gives_the_same_numbers(tmp_path):
    _, runs = standard_runs(tmp_path)
    out_file = tmp_path / "elsewhere" / "r.html"
    res = invoke(runs / "full-ft", runs / "mwa", "--json", "--out", out_file, "--gpu-cost", "3", "--lines", "2",
                 "--retrains-per-year", "5", "--currency", "EUR")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["html"] == str(out_file) and out_file.is_file()
    mwa = next(r for r in rep["runs"] if r["name"] == "mwa")
    assert mwa["roi"]["compute_cost_per_year"] == 0.4 * 10 * 3.0
    assert mwa["rsum_kept_pct"] == 100 * 448 / 460
    assert rep["assumptions"]["currency"] == "EUR" and "EUR" in rep["verdict"]


def test_different_datasets_exit_with_a_clear_message(tmp_path):
    data, runs = standard_runs(tmp_path)
    make_run(runs, "other", "mwa", data, dhash="e" * 64)
    res = invoke("--runs", runs)
    assert res.exit_code == 2
    assert "different datasets" in res.output and "other" in res.output and "Traceback" not in res.output


def test_no_full_ft_prints_the_command_and_estimate_marks(tmp_path):
    import mwa_cli.report.estimate as est
    from tests.unit.report.test_build import fake_measure

    _, runs = standard_runs(tmp_path, with_full_ft=False)
    res = invoke("--runs", runs)
    assert res.exit_code == 0, res.output
    assert "No full fine-tuning run" in res.output and "--method full-ft" in res.output
    orig = est.default_measure
    est.default_measure = lambda: fake_measure([])
    try:
        res = invoke("--runs", runs, "--estimate")
        js = invoke("--runs", runs, "--estimate", "--json")
    finally:
        est.default_measure = orig
    assert res.exit_code == 0, res.output
    assert res.output.count("(estimated)") >= 8
    rep = json.loads(js.stdout)
    assert rep["baseline"]["estimated"] and rep["runs"][0]["estimated"]["cost"]


def test_bad_options(tmp_path):
    _, runs = standard_runs(tmp_path)
    res = invoke("--runs", runs, "--lang", "fr")
    assert res.exit_code == 2 and "--lang" in res.output
    res = invoke("--runs", runs, "--lines", "0")
    assert res.exit_code == 2 and "--lines" in res.output
    res = invoke()
    assert res.exit_code == 2 and "no runs given" in res.output
    res = invoke("--runs", runs, "--target", "90")
    assert res.exit_code == 2 and "--target must be one of 95, 99" in res.output
    assert not (runs / "report.html").exists()  # refused before anything was written


def test_japanese_terminal(tmp_path):
    _, runs = standard_runs(tmp_path)
    res = invoke("--runs", runs, "--lang", "ja")
    assert res.exit_code == 0, res.output
    assert "検索精度" in res.output and "結論" in res.output
