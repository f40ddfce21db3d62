"""The recommendation rule on scripted trial results: the fastest trial within the tolerance of the best val RSUM,
ties, nothing else within the tolerance, pruned / failed / interrupted trials never chosen."""

from __future__ import annotations

import pytest

from mwa_cli.tune.records import TrialRecord
from mwa_cli.tune.rule import recommend


def trial(number: int, curve: list[tuple[float, float]], state: str = "complete", zero: float | None = 100.0
          ) -> TrialRecord:
    return TrialRecord("mwa", number, f"mwa-t{number:03d}", state, {"lr": 0.01}, curve=curve, zero_shot=zero)


BEST = trial(0, [(10.0, 150.0), (20.0, 190.0), (40.0, 240.0), (60.0, 250.0)])  # reaches 95 % (237.5) at 40 s


def test_the_fastest_trial_within_the_tolerance_is_chosen_over_the_best():
    fast = trial(1, [(5.0, 200.0), (12.0, 248.0)])  # 248 ≥ 0.99 × 250, reaches 237.5 at 12 s
    faster_but_worse = trial(2, [(3.0, 240.0), (6.0, 245.0)])  # reaches the target at 3 s, but 245 < 247.5
    rec = recommend([BEST, fast, faster_but_worse], tolerance=0.01, share=0.95)
    assert rec.best is BEST and rec.chosen is fast
    assert rec.target == pytest.approx(237.5) and rec.floor == pytest.approx(247.5)
    assert rec.time_s == 12.0 and rec.best_time_s == 40.0
    assert [r.name for r in rec.candidates] == ["mwa-t001", "mwa-t000"]
    assert "mwa-t001 reached 95 % of the best val RSUM in 12.0 s" in rec.reason
    # a wider tolerance lets the faster, slightly worse trial in
    assert recommend([BEST, fast, faster_but_worse], tolerance=0.03).chosen is faster_but_worse


def test_the_target_is_the_best_trials_share_not_each_trials_own():
    # its own 95 % (190) it reaches at 2 s, the best's 95 % (237.5) never: it is no candidate
    early_plateau = trial(1, [(2.0, 200.0)])
    rec = recommend([BEST, early_plateau], tolerance=0.3)
    assert rec.chosen is BEST and rec.candidates == [BEST]


def test_ties_go_to_the_higher_val_rsum_then_the_earlier_trial():
    a = trial(1, [(12.0, 248.0)])
    b = trial(2, [(12.0, 249.0)])
    c = trial(3, [(12.0, 249.0)])
    assert recommend([BEST, c, a, b]).chosen is b
    twins = [trial(4, list(BEST.curve)), trial(5, list(BEST.curve))]  # same curve: the earlier one, also as best
    rec = recommend(twins)
    assert rec.chosen is twins[0] and rec.best is twins[0]


def test_nothing_else_within_the_tolerance_recommends_the_best_and_says_so():
    slow_good = trial(1, [(80.0, 245.0)])  # 245 < 247.5
    rec = recommend([slow_good, BEST], tolerance=0.01)
    assert rec.chosen is BEST and rec.candidates == [BEST]
    assert "no other configuration came within 1 %" in rec.reason and "mwa-t000" in rec.reason


def test_the_best_can_also_be_the_fastest_of_several_candidates():
    slower = trial(1, [(30.0, 200.0), (70.0, 249.0)])
    rec = recommend([BEST, slower])
    assert rec.chosen is BEST and len(rec.candidates) == 2
    assert "is also the fastest of the 2" in rec.reason


def test_pruned_failed_and_interrupted_trials_are_never_chosen_nor_the_best():
    pruned = trial(1, [(5.0, 260.0)], state="pruned")  # better and faster, but stopped early
    failed = trial(2, [], state="failed")
    running = trial(3, [(4.0, 255.0)], state="running")
    rec = recommend([pruned, failed, BEST, running])
    assert rec.best is BEST and rec.chosen is BEST and rec.candidates == [BEST]


def test_no_completed_trial_recommends_nothing():
    rec = recommend([trial(0, [(5.0, 260.0)], state="pruned"), trial(1, [], state="failed"),
                     trial(2, [])])  # completed, yet without a trained check
    assert rec.chosen is None and rec.best is None and rec.time_s is None
    assert rec.reason.startswith("no trial completed")


def test_a_best_that_never_beat_the_untrained_backbone_is_noted():
    flat = trial(0, [(10.0, 90.0), (20.0, 95.0)], zero=100.0)
    rec = recommend([flat])
    assert rec.chosen is flat
    assert any("no trial beat the untrained backbone" in n for n in rec.notes)
    assert not any("untrained" in n for n in recommend([BEST]).notes)


def test_a_best_trial_that_reaches_the_target_late_says_the_trials_were_too_short():
    # BEST reaches 237.5 at 40 s of 60 s: exactly two thirds, still rising
    rec = recommend([BEST])
    assert any("too short" in n and "40.0 s of its 60.0 s" in n for n in rec.notes)
    early = trial(1, [(10.0, 240.0), (30.0, 245.0), (60.0, 250.0)])  # 95 % at 10 s of 60: levelled off
    assert not any("too short" in n for n in recommend([early]).notes)
    # late, but its best lies three checks back (as in a run early stopping ended): a noisy plateau, not a rise
    plateau = trial(2, [(10.0, 230.0), (40.0, 250.0), (45.0, 236.0), (50.0, 235.0), (55.0, 237.0)])
    assert not any("too short" in n for n in recommend([plateau]).notes)
