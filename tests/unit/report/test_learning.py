"""No verdict from runs that did not learn: collapse, a run or a baseline below the zero-shot backbone, runs far
shorter than the default schedule; and run-to-run noise: one run per method against several seeds."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from mwa_cli.eval.bootstrap import QueryRanks, save_ranks
from mwa_cli.report import view
from mwa_cli.report.api import make_report
from mwa_cli.report.console import print_report
from mwa_cli.train.budget import default_schedule_of, short_schedule_note
from mwa_cli.train.collapse import recall_collapse
from tests.helpers.report_builder import make_data_dir, make_run

N_TEST = 30


def _t2i(data) -> np.ndarray:
    df = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    test = df[df.split == "test"]
    ids = list(dict.fromkeys(test.image_id))
    return np.array([ids.index(i) for i in test.image_id])


def _ranks(run, t2i: np.ndarray, i2t: list[int], t2i_rank: list[int] | int) -> None:
    t2i_ranks = np.array(t2i_rank if isinstance(t2i_rank, list) else [t2i_rank] * len(t2i))
    save_ranks(run, "test", QueryRanks(np.array(i2t), t2i_ranks, t2i))


def _edit(path, **changes) -> None:
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


def _runs(tmp_path, **recalls):
    data = make_data_dir(tmp_path, n_test=N_TEST)
    runs = tmp_path / "runs"
    made = {name: make_run(runs, name, name, data, recall=r) for name, r in recalls.items()}
    return data, made


def _rendered(rep, width: int) -> str:
    con = Console(width=width, record=True, color_system=None)
    print_report(rep, con)
    return con.export_text()


# ---- collapse -------------------------------------------------------------------------------------------------
def _label_level(run, r1_by_label: dict[str, float], answers: list | None = None) -> None:
    per = {lab: {"n_images": 10, "n_captions": 20, "i2t": {"r1": r1, "r5": r1, "r10": r1},
                 "t2i": {"r1": r1, "r5": r1, "r10": r1}, "rsum": 6 * r1} for lab, r1 in r1_by_label.items()}
    mean = sum(r1_by_label.values()) / len(r1_by_label)
    block = {"r1": mean, "r5": mean, "r10": mean, "median_rank": 1.0}
    _edit(run / "eval.json", primary_protocol="label_level",
          label_level={"key": "caption", "protocol": "Identical-caption level: ...", "i2t": block, "t2i": block,
                       "rsum": 6 * mean, "mean_recall": mean, "per_label": per,
                       "top_answers": {"i2t": answers or [], "t2i": []},
                       "chance": {"i2t_r1": 33.3, "t2i_r1": 33.3, "i2t": {"r1": 33.3, "r5": 80.0, "r10": 95.0},
                                  "t2i": {"r1": 33.3, "r5": 80.0, "r10": 95.0}, "rsum": 416.6,
                                  "rsum_ci95": [380.0, 450.0]}})


def test_a_collapsed_run_gets_no_verdict_no_roi_and_no_green(tmp_path):
    data, runs = _runs(tmp_path, **{"full-ft": 90.0, "mwa": 85.0})
    _label_level(runs["full-ft"], {"global": 95.0, "local": 90.0, "nominal": 92.0})
    _label_level(runs["mwa"], {"global": 0.0, "local": 100.0, "nominal": 0.0})  # the textile run
    rep = make_report([], tmp_path / "runs", out=tmp_path / "report.html")
    assert rep["primary_protocol"] == "label_level"
    mwa = next(r for r in rep["runs"] if r["name"] == "mwa")
    assert mwa["learning"]["status"] == "collapsed"
    assert mwa["learning"]["collapse"] == {"kind": "zero_recall", "labels": ["local"],
                                           "zero_labels": ["global", "nominal"], "label": "local", "share": None,
                                           "direction": "i2t"}
    assert rep["decision"]["kind"] == "no_verdict" and rep["decision"]["runs_not_learned"] == ["mwa"]
    assert rep["verdict"].startswith("No verdict: a run that did not learn says nothing about its method")
    assert "MWA did not learn: it collapsed, image→text R@1 is 0 for every label but local (global, nominal: 0)" \
        in rep["verdict"]
    assert "USD" not in rep["verdict"] and "kept" not in rep["verdict"]
    assert all(r["roi"] is None and r["time_pct_of_baseline"] is None for r in rep["runs"])  # --json: no ROI
    assert view.roi_rows(rep) == []
    assert all(not row["kept"]["cls"] and not row["delta_rsum"]["cls"] for row in view.recall_rows(rep))
    text = _rendered(rep, 120)
    assert "No yearly cost: the runs did not learn" in " ".join(text.split())
    assert "Trainings / year" not in text
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No yearly cost: the runs did not learn" in html and "Compute / year" not in html
    assert 'class="good"' not in html  # nothing in green: no "kept %", no saving
    json.dumps(rep)


@pytest.mark.parametrize("r1,answers,collapsed", [
    ({"a": 0.0, "b": 100.0, "c": 0.0}, None, "zero_recall"),  # all but one label at 0 (three labels)
    ({"a": 0.0, "b": 80.0, "c": 60.0}, None, None),  # one label at 0 of three: a weak label, not a collapse
    ({"a": 0.0, "b": 0.0, "c": 50.0, "d": 70.0}, None, "zero_recall"),  # all but two of four
    ({"a": 40.0, "b": 50.0, "c": 60.0}, [["b", 80.0]], "one_answer"),  # 80 % answered by a third of the photos
    ({"a": 40.0, "b": 50.0, "c": 60.0}, [["b", 45.0]], None),  # not "most"
])
def test_collapse_rules(r1, answers, collapsed):
    per = {k: {"i2t": {"r1": v}, "n_images": 10, "n_captions": 10} for k, v in r1.items()}
    found = recall_collapse({"per_label": per, "top_answers": {"i2t": answers or []}})
    assert (found or {}).get("kind") == collapsed
    assert recall_collapse({"per_label": {"a": per[next(iter(per))]}}) is None  # one label: nothing to compare


# ---- below zero-shot ------------------------------------------------------------------------------------------
def test_runs_below_the_zero_shot_backbone_are_named(tmp_path):
    data, runs = _runs(tmp_path, **{"full-ft": 40.0, "mwa": 50.0, "frozen": 45.0})
    t2i = _t2i(data)
    n = N_TEST
    _ranks(runs["frozen"], t2i, [1] * 20 + [20] * (n - 20), 3)
    _ranks(runs["mwa"], t2i, [1] * 25 + [20] * (n - 25), 2)  # above zero-shot on every resample
    _ranks(runs["full-ft"], t2i, [1] * 5 + [20] * (n - 5), 20)  # the baseline below the untrained backbone
    rep = make_report([], tmp_path / "runs", write=False)
    by = {r["name"]: r for r in rep["runs"]}
    assert by["mwa"]["learning"]["status"] == "learned" and by["mwa"]["learning"]["above_zero_shot"]
    assert by["full-ft"]["learning"]["status"] == "did_not_learn" and by["full-ft"]["learning"]["below_zero_shot"]
    assert by["frozen"]["learning"]["status"] == "reference" and not by["frozen"]["is_main"]
    assert rep["references"]["zero_shot"]["source"] == "run" and rep["references"]["zero_shot"]["shown_as_run"]
    assert rep["decision"]["runs_not_learned"] == ["full-ft"]
    assert re.search(r"Full FT did not learn: test RSUM [\d.]+ is below the untrained backbone's [\d.]+ "
                     r"\(difference -[\d.]+, 95 % interval -[\d.]+…-[\d.]+\)", rep["verdict"])
    assert "better" not in rep["verdict"] and rep["decision"]["roi_withheld"]


def test_a_run_not_above_zero_shot_did_not_learn_even_when_slightly_higher(tmp_path):
    data, runs = _runs(tmp_path, **{"full-ft": 60.0, "mwa": 50.0, "frozen": 45.0})
    t2i = _t2i(data)
    _ranks(runs["frozen"], t2i, [1] * 15 + [20] * 15, 3)
    _ranks(runs["mwa"], t2i, [1] * 16 + [20] * 14, 3)  # one image more: the paired interval holds 0
    _ranks(runs["full-ft"], t2i, [1] * 29 + [20], 1)
    rep = make_report([], tmp_path / "runs", write=False)
    mwa = next(r for r in rep["runs"] if r["name"] == "mwa")["learning"]
    assert mwa["vs_zero_shot"]["diff"] > 0 and mwa["vs_zero_shot"]["ci95"][0] <= 0
    assert mwa["status"] == "did_not_learn" and not mwa["below_zero_shot"]
    assert "MWA did not learn: test RSUM" in rep["verdict"] and "is not above the untrained backbone's" in rep["verdict"]


# ---- short runs -----------------------------------------------------------------------------------------------
def test_runs_far_shorter_than_the_default_schedule_are_flagged(tmp_path):
    data, runs = _runs(tmp_path, **{"full-ft": 40.0, "mwa": 39.0, "frozen": 40.0})
    t2i = _t2i(data)
    for name in runs:
        _ranks(runs[name], t2i, [1] * 10 + [20] * 20, 5)  # nothing better than the backbone
        _edit(runs[name] / "config.json", positives_detail={"pairs": 3200, "templated": True}, batch_size=8)
    assert default_schedule_of({"positives_detail": {"pairs": 3200, "templated": True}, "batch_size": 8})[0] == 16000
    rep = make_report([], tmp_path / "runs", write=False)
    assert ("mwa trained 100 steps, 0.6 % of the default schedule for this data (16,000 steps): its recall will not "
            "mean much.") in rep["notes"]
    assert ("What to do: train longer (the default schedule for this data is 16,000 steps; these runs had 100 (MWA) "
            "and 100 (Full FT)); check the label descriptions") not in rep["verdict"]  # instance-level data
    assert ("What to do: train longer (the default schedule for this data is 16,000 steps; these runs had 100 (MWA) "
            "and 100 (Full FT)); or use a larger backbone or image size.") in rep["verdict"]
    assert not any("frozen trained" in n for n in rep["notes"])


def test_short_schedule_note_wording():
    default = (1240, "40 epochs")
    assert short_schedule_note(13, default) == ("this budget allows ≈ 13 steps, 1 % of the default 1,240 for this data "
                                                "(40 epochs): recall will not mean much")
    assert "0.5 % of the default" in short_schedule_note(6, default)
    assert "recall may still be rising" in short_schedule_note(900, default)
    assert short_schedule_note(1240, default) is None and short_schedule_note(5, None) is None
    assert default_schedule_of({"batch_size": 8}) is None  # a run of an older mwa


# ---- run-to-run noise -----------------------------------------------------------------------------------------
def _seeded(tmp_path, per_seed: dict[str, list[int]]):
    data = make_data_dir(tmp_path, n_test=N_TEST)
    t2i = _t2i(data)
    runs = tmp_path / "runs"
    for method, hits in per_seed.items():
        for seed, k in enumerate(hits):
            run = make_run(runs, f"{method}-s{seed}", method, data, recall=50.0)
            _edit(run / "config.json", seed=seed)
            _ranks(run, t2i, [1] * k + [20] * (N_TEST - k), [1] * (2 * k) + [20] * (2 * (N_TEST - k)))
    return runs


def test_one_run_per_method_says_it_cannot_tell_noise_from_a_difference(tmp_path):
    runs = _seeded(tmp_path, {"full-ft": [15], "mwa": [24]})
    rep = make_report([], runs, write=False)
    assert rep["decision"]["single_seed"] and rep["decision"]["seeds"] is None
    assert "one run cannot tell training noise from a difference" in rep["verdict"]
    assert "is better" not in rep["verdict"]


def test_several_seeds_widen_the_interval_by_their_spread(tmp_path):
    runs = _seeded(tmp_path, {"full-ft": [15, 22, 12], "mwa": [24, 14, 23]})
    rep = make_report([], runs, write=False)
    seeds = rep["decision"]["seeds"]
    assert seeds["n_main"] == 3 and seeds["n_baseline"] == 3 and seeds["method"] == "images+seeds"
    image_only = next(r for r in rep["runs"] if r["is_main"])["recall_delta_ci"]["ci95"]["rsum"]
    assert seeds["ci95"]["rsum"][1] - seeds["ci95"]["rsum"][0] > image_only[1] - image_only[0]
    assert seeds["sd_seeds"] > 0 and seeds["df"] >= 4
    assert rep["verdict"].startswith("Over 3 and 3 seeds, MWA is")
    assert "counting both which test images were drawn and the seed-to-seed spread" in rep["verdict"]
    # the same means, no spread between seeds: the interval shrinks to the test images' share
    flat = _seeded(tmp_path / "flat", {"full-ft": [16, 16, 16], "mwa": [20, 20, 20]})
    same = make_report([], flat, write=False)["decision"]["seeds"]
    assert same["sd_seeds"] == 0 and same["se"]["rsum"] == pytest.approx(same["se_images"])
