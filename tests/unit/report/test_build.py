"""Report figures: collection, dataset checks, deltas, savings, ROI, verdict, --estimate (no training needed)."""

from __future__ import annotations

import json
import sys

import pytest

from mwa_cli.errors import MwaError
from mwa_cli.report import roi
from mwa_cli.report.api import default_out, make_report
from mwa_cli.report.collect import collect
from mwa_cli.report.estimate import StepMeasurement, estimate_full_ft_run, full_ft_command
from mwa_cli.report.i18n import STRINGS, t
from mwa_cli.report.numbers import fmt_bytes, fmt_duration
from tests.helpers.report_builder import make_data_dir, make_run, standard_runs


def by_name(rep, name):
    return next(r for r in rep["runs"] if r["name"] == name)


# ---- collection -----------------------------------------------------------------------------------------------
def test_collect_runs_folder_and_explicit_dirs(tmp_path):
    _, runs = standard_runs(tmp_path)
    coll = collect([], runs)
    assert sorted(r.name for r in coll.runs) == ["full-ft", "lora", "mwa"]
    assert len(coll.runs[0].train_rows) == 11  # eval rows are not loss rows
    coll2 = collect([runs / "mwa", runs / "full-ft"])
    assert [r.name for r in coll2.runs] == ["mwa", "full-ft"]
    assert coll2.runs[0].artefact_bytes == 10_000


def test_different_datasets_are_refused_naming_the_runs(tmp_path):
    data, runs = standard_runs(tmp_path)
    make_run(runs, "other-data", "mwa", data, dhash="f" * 64)
    with pytest.raises(MwaError) as exc:
        collect([], runs)
    msg = str(exc.value)
    assert "different datasets" in msg and "other-data" in msg and "ffffffffffff" in msg
    assert "mwa" in msg and exc.value.hint


def test_different_splits_are_refused(tmp_path):
    data, runs = standard_runs(tmp_path)
    make_run(runs, "val-eval", "nke", data, split="val", topk=False)
    with pytest.raises(MwaError, match="different splits"):
        collect([], runs)


def test_incomplete_runs_are_skipped_under_runs_but_refused_when_named(tmp_path):
    data, runs = standard_runs(tmp_path)
    make_run(runs, "unfinished", "nke", data, eval_json=False)
    coll = collect([], runs)
    assert [p for p, _ in coll.skipped] == [str(runs / "unfinished")]
    assert "eval.json" in coll.skipped[0][1]
    with pytest.raises(MwaError, match="eval.json is missing"):
        collect([runs / "unfinished"])
    with pytest.raises(MwaError, match="does not exist"):
        collect([tmp_path / "nope"])
    with pytest.raises(MwaError, match="holds no run"):
        collect([data])


# ---- figures --------------------------------------------------------------------------------------------------
def test_recall_cost_savings_and_roi_figures(tmp_path):
    _, runs = standard_runs(tmp_path)
    rep = make_report([], runs, write=False)
    full, mwa, lora = by_name(rep, "full-ft"), by_name(rep, "mwa"), by_name(rep, "lora")
    assert [r["name"] for r in rep["runs"]] == ["full-ft", "mwa", "lora"]  # baseline, main, others
    assert full["is_baseline"] and mwa["is_main"] and not lora["is_main"]
    # recall: full 60/80/90 both ways -> RSUM 460; mwa 58/78/88 -> 448
    assert full["recall"]["rsum"] == 460 and mwa["recall"]["rsum"] == 448
    assert mwa["recall_delta"]["i2t_r1"] == pytest.approx(-2.0)
    assert mwa["recall_delta"]["rsum"] == pytest.approx(-12.0)
    assert mwa["rsum_kept_pct"] == pytest.approx(100 * 448 / 460)
    assert full["recall_delta"] is None and full["rsum_kept_pct"] == 100.0
    # cost
    assert mwa["cost"]["device_hours"] == pytest.approx(0.4)
    assert mwa["cost"]["hours_unit"] == "gpu_hours" and rep["hours_unit"] == "gpu_hours"
    assert mwa["cost"]["trainable_pct"] == pytest.approx(2.5)
    assert mwa["cost"]["artefact_bytes"] == 10_000
    assert mwa["savings_pct"]["wall_s"] == pytest.approx(60.0)
    assert mwa["savings_pct"]["peak_mem_gib"] == pytest.approx(60.0)
    assert mwa["savings_pct"]["artefact_bytes"] == pytest.approx(97.5)
    assert mwa["time_pct_of_baseline"] == pytest.approx(40.0)
    # ROI with defaults: 10 lines x 12 retrains = 120 trainings; 2.5 USD / GPU-hour
    assert full["roi"]["trainings_per_year"] == 120
    assert full["roi"]["compute_cost_per_year"] == pytest.approx(300.0)
    assert mwa["roi"]["compute_cost_per_year"] == pytest.approx(120.0)
    assert mwa["roi"]["compute_cost_diff"] == pytest.approx(-180.0)
    assert full["roi"]["storage_bytes"] == 10 * 400_000
    assert mwa["roi"]["storage_bytes"] == 10 * 10_000 + 400_000  # + one shared backbone (full-FT artefact)
    assert mwa["roi"]["storage_bytes_diff"] == 10 * 10_000 + 400_000 - 4_000_000
    # per label and loss curves
    assert set(mwa["per_label"]) == {"scratch", "dent", "rust"}
    assert mwa["loss_curve"]["x"] == "time_min" and len(mwa["loss_curve"]["points"]) == 11
    # verdict in plain words, nothing estimated
    assert rep["verdict"] == ("The test split has only 6 images: too few to tell MWA from full fine-tuning "
                              "(difference -12.0 RSUM), so there is no better/worse verdict; at least 30 test images "
                              "(24 more) are needed. Training time: 40 % of full fine-tuning's (whole runs: time to "
                              "quality could not be measured), saving 180 USD a year at the assumed price and counts.")
    assert not rep["verdict_estimated"]
    assert not any(v for r in rep["runs"] for v in r["estimated"].values())
    assert rep["baseline"] == {"run": "full-ft", "method": "full-ft", "found": True, "estimated": False,
                               "train_command": None}
    assert rep["dataset"]["images"] == 9 and rep["dataset"]["n_images"] == 6
    json.dumps(rep)  # all plain JSON


def test_adjustable_assumptions(tmp_path):
    _, runs = standard_runs(tmp_path)
    a = roi.Assumptions(gpu_cost_per_hour=4.0, currency="JPY", lines=3, retrains_per_year=2)
    rep = make_report([], runs, assumptions=a, write=False)
    mwa = by_name(rep, "mwa")
    assert mwa["roi"]["trainings_per_year"] == 6
    assert mwa["roi"]["compute_cost_per_year"] == pytest.approx(0.4 * 6 * 4.0)
    assert rep["assumptions"]["currency"] == "JPY"
    assert "JPY" in rep["verdict"]
    with pytest.raises(MwaError, match="--lines"):
        roi.Assumptions(lines=0)
    with pytest.raises(MwaError, match="--gpu-cost"):
        roi.Assumptions(gpu_cost_per_hour=-1)


def test_cpu_runs_say_cpu_hours(tmp_path):
    _, runs = standard_runs(tmp_path, device_type="cpu")
    rep = make_report([], runs, write=False)
    assert rep["hours_unit"] == "cpu_hours"
    assert t("en", rep["hours_unit"]) == "CPU-hours"


def test_verdict_variants(tmp_path):
    data = make_data_dir(tmp_path, n_test=30)  # a test split large enough for a verdict
    runs = tmp_path / "runs"
    make_run(runs, "full-ft", "full-ft", data, recall=60.0, wall_s=3600)
    make_run(runs, "mwa", "mwa", data, recall=40.0, wall_s=1800)
    rep = make_report([], runs, write=False)
    assert "kept 73.9 %" in rep["verdict"] and "no interval" in rep["verdict"]  # older runs: no ranks file
    make_run(runs, "mwa-long", "mwa", data, recall=61.0, wall_s=7200)
    rep = make_report([runs / "full-ft", runs / "mwa-long"], write=False)
    assert "200 %" in rep["verdict"] and "costing" in rep["verdict"]


def test_no_full_ft_run_says_so_and_gives_the_command(tmp_path):
    _, runs = standard_runs(tmp_path, with_full_ft=False)
    rep = make_report([], runs, write=False)
    assert rep["baseline"]["found"] is False and rep["baseline"]["run"] is None
    cmd = rep["baseline"]["train_command"]
    assert "--method full-ft" in cmd and "--method mwa" not in cmd and "--name" not in cmd
    assert rep["verdict"] == t("en", "verdict_none")
    mwa = by_name(rep, "mwa")
    assert mwa["recall_delta"] is None and mwa["savings_pct"]["wall_s"] is None


def fake_measure(calls):
    def measure(req):
        calls.append(req)
        assert req.config["method"] == "full-ft"
        return StepMeasurement(step_s=0.5, samples_per_step=8, total_params=100_000_000, peak_mem_gib=31.0,
                               device_type="cuda", device_name="Fake GPU", steps_measured=req.steps)
    return measure


def test_estimate_marks_every_estimated_figure(tmp_path):
    _, runs = standard_runs(tmp_path, with_full_ft=False)
    calls = []
    rep = make_report([], runs, estimate=True, measure=fake_measure(calls), estimate_steps=5, write=False)
    assert len(calls) == 1 and calls[0].steps == 5 and calls[0].data_dir is not None
    base = rep["runs"][0]
    assert base["is_baseline"] and base["estimated"] == {"recall": False, "cost": True, "savings": True, "roi": True}
    assert rep["baseline"]["estimated"] and not rep["baseline"]["found"]
    # extrapolation: mwa trained 800 samples; 100 steps of 8 at 0.5 s = 50 s + mwa's eval + checkpoint (10 %)
    assert base["cost"]["train_s"] == pytest.approx(50.0)
    assert base["cost"]["wall_s"] == pytest.approx(50.0 + 0.1 * 1440)
    assert base["cost"]["trainable_params"] == 100_000_000 and base["cost"]["artefact_bytes"] == 400_000_000
    assert base["recall"] is None
    for r in rep["runs"][1:]:
        assert r["estimated"]["savings"] and r["estimated"]["roi"] and not r["estimated"]["cost"]
        assert r["recall_delta"] is None and r["savings_pct"]["wall_s"] is not None
    assert rep["verdict_estimated"] and "estimated" in rep["verdict"]
    assert any("estimated" in n.lower() for n in rep["notes"])
    assert "--method full-ft" in rep["baseline"]["train_command"]


def test_estimate_without_the_trainer_hook_is_a_clear_error(tmp_path, monkeypatch):
    _, runs = standard_runs(tmp_path, with_full_ft=False)
    monkeypatch.setitem(sys.modules, "mwa_cli.train.estimate", None)  # import fails
    with pytest.raises(MwaError, match="measure_full_ft_step"):
        make_report([], runs, estimate=True, write=False)


def test_estimate_ignored_when_a_full_ft_run_exists(tmp_path):
    _, runs = standard_runs(tmp_path)
    rep = make_report([], runs, estimate=True, measure=fake_measure([]), write=False)
    assert rep["baseline"]["found"] and any("--estimate ignored" in n for n in rep["notes"])


def test_estimate_function_directly(tmp_path):
    data = make_data_dir(tmp_path)
    run = make_run(tmp_path / "runs", "mwa", "mwa", data, wall_s=100)
    ref = collect([run]).runs[0]
    est = estimate_full_ft_run(ref, fake_measure([]))
    assert est.estimated and est.timing["estimated"] and est.method == "full-ft"
    assert "not run" in est.config["command"]
    assert full_ft_command(ref).startswith(f"mwa train {data} --method full-ft")


def test_default_out_is_inside_the_runs_folder(tmp_path):
    _, runs = standard_runs(tmp_path)
    assert default_out([], runs) == runs / "report.html"
    assert default_out([runs / "mwa", runs / "lora"], None) == runs / "report.html"


# ---- i18n -----------------------------------------------------------------------------------------------------
def test_every_string_exists_in_both_languages():
    assert set(STRINGS["en"]) == set(STRINGS["ja"])
    for key, text in STRINGS["en"].items():  # same placeholders
        import string

        f = string.Formatter()
        en = {x[1] for x in f.parse(text) if x[1]}
        ja = {x[1] for x in f.parse(STRINGS["ja"][key]) if x[1]}
        assert en == ja, key


def test_japanese_verdict(tmp_path):
    _, runs = standard_runs(tmp_path)
    rep = make_report([], runs, lang="ja", write=False)
    assert "フルファインチューニング" in rep["verdict"] and "判定には少なくとも 30 枚（あと 24 枚）" in rep["verdict"]


def test_formatters():
    assert fmt_duration(3725) == "1 h 02 min" and fmt_duration(3725, "ja") == "1時間02分"
    assert fmt_duration(None) == "—"
    assert fmt_bytes(1536) == "1.5 KiB" and fmt_bytes(-2 * 1024**2, signed=True) == "-2.0 MiB"


def test_a_run_from_random_weights_is_flagged(tmp_path):
    _, runs = standard_runs(tmp_path)
    cfg_path = runs / "mwa" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(dict(cfg, weights="none")))
    rep = make_report([], runs, write=False)
    assert any("mwa started from a randomly initialised backbone" in n for n in rep["notes"])
    assert not any("full-ft started from" in n for n in rep["notes"])


@pytest.mark.parametrize("bad_file, content", [("config.json", "[1, 2, 3]"), ("eval.json", "null"),
                                               ("timing.json", "{not json")])
def test_one_broken_run_is_skipped_with_its_reason_not_fatal(tmp_path, bad_file, content):
    _, runs = standard_runs(tmp_path)
    (runs / "lora" / bad_file).write_text(content)
    coll = collect([], runs)
    assert sorted(r.name for r in coll.runs) == ["full-ft", "mwa"]
    (path, why), = coll.skipped
    assert path.endswith("lora") and bad_file in why and str(runs / "lora") not in why.split(";")[0]
    with pytest.raises(MwaError, match=f"lora: {bad_file}"):
        collect([runs / "lora"])


def test_an_unfinished_run_points_to_resume_and_an_unevaluated_one_to_eval(tmp_path):
    _, runs = standard_runs(tmp_path)
    (runs / "lora" / "eval.json").unlink()
    (runs / "mwa" / "timing.json").unlink()
    (runs / "mwa" / "adapter_model.safetensors").unlink(missing_ok=True)
    skipped = dict(collect([], runs).skipped)
    assert f"mwa eval {runs / 'lora'}" in skipped[str(runs / "lora")]
    assert f"mwa train --resume {runs / 'mwa'}" in skipped[str(runs / "mwa")]
