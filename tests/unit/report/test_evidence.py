"""The report's evidence: intervals on every recall, the paired verdict (better / worse / not distinguishable),
time to quality from validation curves (and the ROI built on it), and seed groups."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mwa_cli.eval.bootstrap import QueryRanks, save_ranks
from mwa_cli.report import view
from mwa_cli.report.api import make_report
from mwa_cli.report.verdict import classify, quality_sentence
from tests.helpers.report_builder import make_data_dir, make_run


def _test_map(data) -> np.ndarray:
    df = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    test = df[df.split == "test"]
    ids = list(dict.fromkeys(test.image_id))
    return np.array([ids.index(i) for i in test.image_id])


def _ranks(run, t2i: np.ndarray, i2t_rank, t2i_rank) -> None:
    n = int(t2i.max()) + 1
    save_ranks(run, "test", QueryRanks(np.array(i2t_rank if isinstance(i2t_rank, list) else [i2t_rank] * n),
                                       np.array(t2i_rank if isinstance(t2i_rank, list) else [t2i_rank] * len(t2i)),
                                       t2i))


def _val_curve(run, points: list[tuple[float, float]]) -> None:
    """Append val checks (time without validation, RSUM) to metrics.jsonl."""
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        for i, (secs, rsum) in enumerate(points):
            f.write(json.dumps({"kind": "eval", "step": 10 * i, "split": "val", "rsum": rsum,
                                "time_s": secs + 2.0 * i, "time_no_val_s": secs}) + "\n")


def _set_seed(run, seed: int) -> None:
    cfg = json.loads((run / "config.json").read_text())
    cfg["seed"] = seed
    (run / "config.json").write_text(json.dumps(cfg))


def test_every_recall_carries_an_interval_and_the_verdict_says_better(tmp_path):
    data = make_data_dir(tmp_path, n_test=30)
    runs = tmp_path / "runs"
    t2i = _test_map(data)
    full = make_run(runs, "full-ft", "full-ft", data, recall=60.0, wall_s=3600)
    mwa = make_run(runs, "mwa", "mwa", data, recall=58.0, wall_s=1440)
    _ranks(full, t2i, 2, 2)  # full-ft misses at K = 1 only, mwa hits everything: no resample disagrees
    _ranks(mwa, t2i, 1, 1)
    rep = make_report([], runs, write=False)
    m = next(r for r in rep["runs"] if r["name"] == "mwa")
    assert set(m["recall_ci"]["ci95"]) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}
    assert m["recall_ci"]["resamples"] == rep["bootstrap"]["resamples"] == 2000
    assert m["recall_delta_ci"]["ci95"]["rsum"] == [200.0, 200.0]
    assert rep["verdict"].startswith(f"On these {len(set(t2i))} test images MWA scored +200.0 RSUM against full "
                                     "fine-tuning (95 % interval +200.0…+200.0 over the test images, instance protocol)"
                                     ", but that is one run per method, and one run cannot tell training noise from a "
                                     "difference: train each with --seeds 3 and report again.")
    assert rep["decision"] == {"kind": "compare", "roi_withheld": False, "runs_not_learned": [], "seeds": None,
                               "single_seed": True}


def test_indistinguishable_verdict_names_the_images_needed(tmp_path):
    data = make_data_dir(tmp_path, n_test=30)
    runs = tmp_path / "runs"
    t2i = _test_map(data)
    n = int(t2i.max()) + 1
    full = make_run(runs, "full-ft", "full-ft", data, recall=60.0)
    mwa = make_run(runs, "mwa", "mwa", data, recall=58.0)
    _ranks(full, t2i, [1] * (n - 1) + [30], 1)
    _ranks(mwa, t2i, [30] + [1] * (n - 1), 1)  # each misses one different image: difference 0
    rep = make_report([], runs, write=False)
    assert "is not distinguishable from full fine-tuning on these" in rep["verdict"]
    assert "no number of test images separates a difference of zero" in rep["verdict"]


def test_verdict_wording_for_better_worse_and_indistinguishable():
    def run(diff, lo, hi, se=3.0):
        return {"display": "MWA", "protocol_name": "instance", "rsum_kept_pct": 99.0,
                "recall_delta_ci": {"value": {"rsum": diff}, "ci95": {"rsum": [lo, hi]}, "se": {"rsum": se},
                                    "n_images": 44}}
    one_run = ", but that is one run per method, and one run cannot tell training noise from a difference: train " \
              "each with --seeds 3 and report again."
    # one run per method: no "better"/"worse", whatever the interval over the test images says
    assert quality_sentence("en", run(12.0, 3.0, 21.0), {}) == (
        "On these 44 test images MWA scored +12.0 RSUM against full fine-tuning (95 % interval +3.0…+21.0 over the "
        "test images, instance protocol)" + one_run)
    assert quality_sentence("en", run(-12.0, -21.0, -3.0), {}) == (
        "On these 44 test images MWA scored -12.0 RSUM against full fine-tuning (95 % interval -21.0…-3.0 over the "
        "test images, instance protocol)" + one_run)
    same = quality_sentence("en", run(-2.1, -9.0, 4.8, se=3.5), {})  # 44 × (1.96 × 3.5 / 2.1)² = 469.5
    assert same == ("MWA is not distinguishable from full fine-tuning on these 44 test images (difference -2.1 RSUM, "
                    "95 % interval -9.0…+4.8, instance protocol); about 470 test images (426 more) would be needed to "
                    "separate a difference of this size. With one run per method, training noise is not counted "
                    "either (--seeds 3 counts it).")
    # several seeds: the seed-aware interval decides, and says what it counts
    seeds = {"value": {"rsum": 12.0}, "ci95": {"rsum": [3.0, 21.0]}, "n_images": 44, "n_main": 3, "n_baseline": 3}
    assert quality_sentence("en", run(12.0, 3.0, 21.0), {}, seeds=seeds) == (
        "Over 3 and 3 seeds, MWA is better than full fine-tuning on these 44 test images: +12.0 RSUM (95 % interval "
        "+3.0…+21.0, counting both which test images were drawn and the seed-to-seed spread; instance protocol).")
    wide = dict(seeds, ci95={"rsum": [-4.0, 28.0]})
    assert "is not distinguishable" in quality_sentence("en", run(12.0, 3.0, 21.0), {}, seeds=wide)
    assert classify(run(0.0, -1.0, 1.0)["recall_delta_ci"]) == "same"
    label = dict(run(12.0, 3.0, 21.0), protocol_name="label_level")
    assert "label-level protocol" in quality_sentence("en", label, {})
    assert "ラベル単位" in quality_sentence("ja", label, {})


def test_time_to_quality_drives_the_roi_and_the_chart(tmp_path):
    data = make_data_dir(tmp_path)
    runs = tmp_path / "runs"
    full = make_run(runs, "full-ft", "full-ft", data, recall=60.0, wall_s=3600)
    mwa = make_run(runs, "mwa", "mwa", data, recall=58.0, wall_s=3600)
    nke = make_run(runs, "nke", "nke", data, recall=40.0, wall_s=3600)
    _val_curve(full, [(0, 100.0), (600, 300.0), (1800, 390.0), (3000, 400.0)])
    _val_curve(mwa, [(0, 100.0), (360, 385.0), (720, 397.0), (3000, 398.0)])
    _val_curve(nke, [(0, 100.0), (1800, 250.0), (3000, 300.0)])
    rep = make_report([], runs, out=tmp_path / "r.html")
    by = {r["name"]: r for r in rep["runs"]}
    assert by["mwa"]["time_to_quality"]["to"]["95"]["time_s"] == 360  # 385 ≥ 0.95 × 400
    assert by["mwa"]["time_to_quality"]["to"]["99"]["time_s"] == 720  # 397 ≥ 0.99 × 400 = 396
    assert by["full-ft"]["time_to_quality"]["to"]["95"]["time_s"] == 1800
    assert by["nke"]["time_to_quality"]["to"]["95"] is None and by["nke"]["roi_basis"] == "not_reached"
    # ROI: 120 trainings × hours to 95 % × 2.5 USD; the whole run was an hour for both
    assert by["mwa"]["roi"]["compute_cost_per_year"] == pytest.approx(120 * 0.1 * 2.5)
    assert by["full-ft"]["roi"]["compute_cost_per_year"] == pytest.approx(120 * 0.5 * 2.5)
    assert by["mwa"]["time_pct_of_baseline"] == pytest.approx(20.0)
    assert "after 6 min 00 s of training, 20 % of the 30 min 00 s full fine-tuning needed" in rep["verdict"]
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Time to quality" in html and "Validation RSUM vs wall time" in html and "not reached" in html


def test_seed_groups_show_mean_and_spread(tmp_path):
    data = make_data_dir(tmp_path)
    runs = tmp_path / "runs"
    for seed, rec in ((0, 60.0), (1, 62.0), (2, 58.0)):
        _set_seed(make_run(runs, f"full-ft-s{seed}", "full-ft", data, recall=rec), seed)
    for seed, rec in ((0, 57.0), (1, 59.0), (2, 55.0)):
        _set_seed(make_run(runs, f"mwa-s{seed}", "mwa", data, recall=rec), seed)
    rep = make_report([], runs, write=False)
    groups = {g["method"]: g for g in rep["seed_groups"]}
    assert groups["mwa"]["seeds"] == [0, 1, 2]
    assert groups["mwa"]["test_rsum"]["mean"] == pytest.approx(2 * (57 + 77 + 87))
    assert groups["mwa"]["test_rsum"]["sd"] == pytest.approx(2 * 3 * 2.0)  # RSUM moves 6× the r1 sd of 2
    # the verdict is about the run of the baseline's seed, not the luckiest one, and gives the spread
    main = next(r for r in rep["runs"] if r["is_main"])
    baseline = next(r for r in rep["runs"] if r["is_baseline"])
    assert main["seed"] == baseline["seed"]
    assert "Over 3 seeds: MWA test RSUM 442.0 ± 12.0, full fine-tuning 460.0 ± 12.0." in rep["verdict"]


def test_patience_replay_on_a_recorded_curve():
    from mwa_cli.report.quality_time import simulate_patience

    curve = [{"time_s": float(t), "step": t, "rsum": r} for t, r in
             [(0, 100.0), (10, 200.0), (20, 190.0), (30, 195.0), (40, 260.0), (50, 250.0)]]
    early = simulate_patience(curve, 2)
    assert early["stopped"] and early["stop_time_s"] == 30.0 and early["best_rsum"] == 200.0
    assert early["full_best_rsum"] == 260.0
    late = simulate_patience(curve, 3)  # never 3 checks in a row without improvement before the end
    assert not late["stopped"] and late["best_rsum"] == 260.0
    spaced = simulate_patience(curve, 1, min_gap_s=25.0)  # checks at 0, 30 and the final one at 50
    assert not spaced["stopped"] and spaced["best_rsum"] == 250.0


def test_time_to_quality_uses_the_baseline_of_the_same_seed(tmp_path):
    data = make_data_dir(tmp_path)
    runs = tmp_path / "runs"
    for seed, best in ((0, 400.0), (1, 200.0)):
        full = make_run(runs, f"full-ft-s{seed}", "full-ft", data)
        _set_seed(full, seed)
        _val_curve(full, [(0, 100.0), (600, best)])
        mwa = make_run(runs, f"mwa-s{seed}", "mwa", data)
        _set_seed(mwa, seed)
        _val_curve(mwa, [(0, 100.0), (100, 195.0), (300, 390.0)])
    rep = make_report([], runs, write=False)
    by = {r["name"]: r for r in rep["runs"]}
    assert by["mwa-s0"]["time_to_quality"]["reference"] == 400.0
    assert by["mwa-s0"]["time_to_quality"]["to"]["95"]["time_s"] == 300
    assert by["mwa-s1"]["time_to_quality"]["reference"] == 200.0
    assert by["mwa-s1"]["time_to_quality"]["to"]["95"]["time_s"] == 100


def test_the_zero_shot_point_is_never_a_reference_or_a_hit(tmp_path):
    data = make_data_dir(tmp_path)
    runs = tmp_path / "runs"
    full = make_run(runs, "full-ft", "full-ft", data)
    mwa = make_run(runs, "mwa", "mwa", data)
    _val_curve(full, [(0.5, 229.5), (51.0, 194.3), (63.3, 240.9)])  # mwa demo: full-ft barely beat zero-shot
    _val_curve(mwa, [(5.0, 229.5), (60.9, 376.1)])
    rep = make_report([], runs, write=False)
    by = {r["name"]: r for r in rep["runs"]}
    assert rep["time_to_quality"]["reference_best_val_rsum"] == 240.9
    # 95 % of 240.9 = 228.9: the untrained backbone (229.5 at step 0) already meets it, so it is not measured
    assert rep["time_to_quality"]["zero_shot_val_rsum"] == 229.5
    for name in ("full-ft", "mwa"):
        assert by[name]["time_to_quality"]["to"]["95"] is None and by[name]["time_to_quality"]["below_floor"] == [95]
    assert by["full-ft"]["time_to_quality"]["to"]["99"]["time_s"] == 63.3  # 238.5: above zero-shot
    assert by["mwa"]["time_to_quality"]["to"]["99"]["time_s"] == 60.9
    assert by["mwa"]["time_to_quality"]["curve"][0] == [5.0 / 60.0, 229.5]  # still drawn
    assert by["mwa"]["roi_basis"] == "whole_run"  # the ROI's 95 % target was not measured, not "not reached"
    rows = {r["name"]: r for r in view.ttq_rows(rep, "en")}
    assert rows["MWA"]["to"]["95"]["text"] == "—" and rows["MWA"]["to"]["99"]["text"] == "1 min 01 s"
    assert view.ttq_floor_note(rep, "en").startswith("Time to 95 % is not measured")


def test_a_baseline_that_never_beat_zero_shot_gives_no_time_to_quality(tmp_path):
    data = make_data_dir(tmp_path)
    runs = tmp_path / "runs"
    full = make_run(runs, "full-ft", "full-ft", data, wall_s=75)
    mwa = make_run(runs, "mwa", "mwa", data, wall_s=75)
    _val_curve(full, [(2.1, 229.5), (18.1, 229.5), (20.9, 206.8), (45.9, 228.4)])  # seen in mwa demo
    _val_curve(mwa, [(4.1, 229.5), (10.7, 229.5), (62.7, 277.3)])
    rep = make_report([], runs, write=False)
    by = {r["name"]: r for r in rep["runs"]}
    assert rep["time_to_quality"]["reference_best_val_rsum"] is None
    assert by["mwa"]["roi_basis"] == "whole_run" and by["mwa"]["time_to_quality"]["to"]["95"] is None
    assert any("never beat the zero-shot backbone" in n for n in rep["notes"])
    assert "time to quality could not be measured" in rep["verdict"]
