"""Checks by step without a budget: a count from the work a check and a step do, spread evenly."""

from __future__ import annotations

from mwa_cli.train.val_schedule import check_count, step_checks


def test_check_count_follows_the_share_of_work():
    # a check of 600 items is 600 / (6 * 32) = 3.125 steps of work; 5 % of 1000 steps, checks included: 16 checks
    assert check_count(1000, 32, 600, 0.05) == 16
    assert check_count(1000, 32, 600, 0.10) == 35  # a larger share: more checks
    assert check_count(1000, 64, 600, 0.05) == 33  # bigger steps: each check is cheaper against them
    assert check_count(10, 8, 10_000, 0.05) == 1  # at least one check when there is a val split
    assert check_count(5, 512, 10, 0.5) == 4  # never more than the steps inside the run
    assert check_count(1, 8, 100, 0.05) == check_count(100, 8, 0, 0.05) == check_count(100, 8, 100, 0.0) == 0


def test_step_checks_are_evenly_spaced_inside_the_run_and_depend_on_steps_only():
    assert step_checks(100, 8, 48, 0.05) == {17, 33, 50, 67, 83}  # a check = 1 step of work: 5 checks
    assert step_checks(100, 8, 48, 0.05) == step_checks(100, 8, 48, 0.05)
    assert step_checks(1, 8, 48, 0.05) == set()
    checks = step_checks(30, 8, 18, 0.05)
    assert checks and all(0 < s < 30 for s in checks)
