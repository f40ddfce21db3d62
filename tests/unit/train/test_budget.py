"""The budget planner driven by a scripted clock: the run ends within 3 % of its budget whatever the step times do
(slow first steps, a mid-run slowdown, a resume), validation stays within its share, and early stopping."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from mwa_cli.train.budget import BudgetPlanner
from mwa_cli.train.early_stop import BestKeeper
from mwa_cli.train.schedule import WarmupCosine

VAL_ITEMS, TEST_ITEMS, PER_ITEM = 200, 200, 0.002  # a val/test evaluation really costs 0.2 + 0.4 s


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _eval_cost(items: int) -> float:
    return 0.2 + items * PER_ITEM


def _segment(planner: BudgetPlanner, clock: Clock, step_s: Callable[[int, float], float], *, step: int,
             train_s: float, total: int | None, stop_at: float | None = None,
             check_s: Callable[[int], float] = lambda k: _eval_cost(VAL_ITEMS), wall_prev: float = 0.0,
             checks_prev: float = 0.0) -> tuple[int, float, int, dict]:
    """One process's training loop, as mwa_cli.train.loop drives the planner. Returns (step, train_s, total, log)."""
    log = {"val_checks": 0, "val_s": 0.0}
    sched = WarmupCosine(1.0, kind="wsd")
    if total is None:  # fresh run: warm-up measurement, then the first plan
        measure = planner.new_measurement("cpu")
        while True:
            dt = step_s(step, clock.t)
            clock.t += dt
            train_s += dt
            step += 1
            if measure.tick(step, lambda: None):
                break
        if not planner.warm_eval_seen:  # a warm check before the first plan (the step-0 one was cold)
            cost = check_s(log["val_checks"])
            clock.t += cost
            planner.observe_eval(cost, VAL_ITEMS)
            log["val_checks"] += 1
            log["val_s"] += cost
        total, _ = planner.plan(step, measure.step_time, None, checks_s=checks_prev + log["val_s"],
                                elapsed_s=wall_prev + clock.t)
    planner.start_rate(step, train_s)
    sched.fit(total)
    while step < total:
        if stop_at is not None and clock.t >= stop_at:
            return step, train_s, total, log
        if planner.must_stop(step, total, set()):
            break
        if planner.val_due(checks_prev + log["val_s"], wall_prev + clock.t):
            cost = check_s(log["val_checks"])
            clock.t += cost
            planner.observe_eval(cost, VAL_ITEMS)
            log["val_checks"] += 1
            log["val_s"] += cost
            continue
        dt = step_s(step, clock.t)
        clock.t += dt
        train_s += dt
        step += 1
        st = planner.observe_progress(step, train_s)
        if st is not None:
            new, _ = planner.plan(step, st, None, checks_s=checks_prev + log["val_s"], elapsed_s=wall_prev + clock.t)
            if abs(new - total) >= max(1.0, 0.01 * total):
                total = max(new, step)
                sched.fit(total, at_step=step)
    clock.t += _eval_cost(VAL_ITEMS) + _eval_cost(TEST_ITEMS) + 0.1  # final val + test evaluation, adapter
    log["lr_end"] = sched.lr_at(step - 1)
    return step, train_s, total, log


def _planner(budget: float, clock: Clock, deadline: float | None = None, cold: float = _eval_cost(VAL_ITEMS)
             ) -> BudgetPlanner:
    p = BudgetPlanner(budget_s=budget, deadline=budget if deadline is None else deadline, val_items=VAL_ITEMS,
                      final_items=TEST_ITEMS, val_evals=None, checkpoint_every=0, checkpoint_minutes=10.0,
                      batch_size=8, clock=clock)
    clock.t += cold  # the step-0 val evaluation (the process's first) measures the evaluation cost
    p.observe_eval(cold, VAL_ITEMS, warm=False)
    return p


def _within(t: float, budget: float) -> bool:
    return abs(t - budget) <= 0.03 * budget


def test_slow_first_steps_do_not_shorten_the_run():
    budget, clock = 75.0, Clock(2.0)  # 2 s of start-up before training
    p = _planner(budget, clock)
    steps, _, _, log = _segment(p, clock, lambda i, t: 6.0 if i < 3 else 0.9, step=0, train_s=0.0, total=None)
    assert _within(clock.t, budget), clock.t
    assert steps > 50  # the old planner stopped such a run after 7 steps
    assert log["lr_end"] < 0.05, "the schedule's decay must reach its end with the run"


def test_mid_run_slowdown_still_ends_on_time():
    budget, clock = 100.0, Clock()
    p = _planner(budget, clock)
    _, _, _, log = _segment(p, clock, lambda i, t: 0.2 if t < 40 else 0.7, step=0, train_s=0.0, total=None)
    assert _within(clock.t, budget), clock.t
    assert clock.t <= budget


def test_fast_after_a_pessimistic_start_uses_the_budget():
    budget, clock = 60.0, Clock()
    p = _planner(budget, clock)
    _segment(p, clock, lambda i, t: 3.0 if t < 6 else 0.1, step=0, train_s=0.0, total=None)
    assert _within(clock.t, budget), clock.t


def test_resume_counts_the_first_segment_and_the_restart():
    budget, clock = 90.0, Clock()
    p = _planner(budget, clock)
    step, train_s, total, log1 = _segment(p, clock, lambda i, t: 0.5, step=0, train_s=0.0, total=None, stop_at=40.0)
    wall_prev = clock.t + 0.3  # checkpoint on the way out
    state = p.state()
    # a new process: 4 s of start-up, then slow warm-up steps; the deadline counts the first segment's wall time
    clock2 = Clock(4.0)
    p2 = BudgetPlanner(budget_s=budget, deadline=0.0 + budget - wall_prev, val_items=VAL_ITEMS,
                       final_items=TEST_ITEMS, val_evals=None, checkpoint_every=0, checkpoint_minutes=10.0,
                       batch_size=8, clock=clock2)
    p2.load_state(state)
    _segment(p2, clock2, lambda i, t: 2.5 if i < step + 2 else 0.5, step=step, train_s=train_s, total=total,
             wall_prev=wall_prev, checks_prev=log1["val_s"])
    assert _within(wall_prev + clock2.t, budget), wall_prev + clock2.t


def test_cost_aware_validation_stays_within_its_share():
    budget, clock = 200.0, Clock()
    p = _planner(budget, clock)
    _, _, _, log = _segment(p, clock, lambda i, t: 0.3, step=0, train_s=0.0, total=None)
    assert log["val_checks"] >= 5
    assert log["val_s"] / clock.t <= 0.05 + 1e-9


def test_wsd_decay_never_jumps_back_up():
    s = WarmupCosine(1.0, min_lr=0.0, kind="wsd", warmup_frac=0.1, decay_frac=0.2)
    s.fit(100)
    assert s.lr_at(50) == 1.0 and s.lr_at(85) < 1.0
    before = s.lr_at(85)
    s.fit(150, at_step=85)  # the plan grew after the decay started: only its end moves
    assert s.decay_start == 80 and s.lr_at(85) >= before - 1e-9 and s.lr_at(85) < 1.0
    assert s.lr_at(149) < 0.01


# ------------------------------------------------------------------------------------------------ early stopping
def _weights(v: float) -> Callable[[], dict[str, torch.Tensor]]:
    return lambda: {"w": torch.tensor([v])}


def test_early_stopping_on_a_scripted_validation_curve():
    curve = [100.0, 150.0, 180.0, 179.0, 185.0, 184.0, 183.0, 185.0, 170.0, 190.0]
    k = BestKeeper(patience=4)
    stopped_at = None
    for i, rsum in enumerate(curve):
        k.observe(i * 10, rsum, float(i), _weights(rsum))
        if k.should_stop():
            stopped_at = i
            break
    assert stopped_at == 8  # 185 at check 4, then four checks without a strictly higher value
    assert (k.step, k.rsum) == (40, 185.0) and k.weights["w"].item() == 185.0
    assert "step 40" in k.reason()


def test_patience_zero_never_stops_and_state_round_trips():
    k = BestKeeper(patience=0)
    for i, rsum in enumerate([5.0, 4.0, 3.0, 2.0, 1.0, 0.5]):
        k.observe(i, rsum, float(i), _weights(rsum))
    assert not k.should_stop() and k.step == 0
    k2 = BestKeeper(patience=0)
    k2.load_state_dict(k.state_dict())
    assert (k2.step, k2.rsum, k2.since_best, k2.weights["w"].item()) == (0, 5.0, 5, 5.0)


@pytest.mark.parametrize("bad", [-1])
def test_negative_patience_is_refused(bad):
    from mwa_cli.errors import ConfigError
    from mwa_cli.train.config import TrainConfig

    with pytest.raises(ConfigError, match="patience"):
        TrainConfig(data_dir="x", patience=bad).validate()


def test_one_slow_check_on_a_busy_machine_does_not_shrink_the_run():
    budget, clock = 300.0, Clock()  # long enough for a normal check after the slow one
    p = _planner(budget, clock)
    _, _, _, log = _segment(p, clock, lambda i, t: 0.4, step=0, train_s=0.0, total=None,
                            check_s=lambda k: 6.0 if k == 0 else _eval_cost(VAL_ITEMS))
    assert log["val_checks"] >= 2  # the slow one and a later, normal one
    assert _within(clock.t, budget), clock.t


def test_a_cold_first_check_does_not_shrink_a_short_run():
    budget, clock = 75.0, Clock(5.0)
    p = _planner(budget, clock, cold=4.0)  # the first evaluation of a process: 7× the warm cost
    _, _, _, log = _segment(p, clock, lambda i, t: 9.0 if i == 0 else 1.0, step=0, train_s=0.0, total=None)
    assert log["val_checks"] >= 1  # the warm check right after the first plan
    assert _within(clock.t, budget), clock.t


def test_one_slow_step_after_a_check_does_not_become_the_step_time():
    p = _planner(100.0, Clock())
    p.start_rate(0, 0.0)
    train_s = 0.0
    for step in range(1, 151):  # 150 steps of 0.35 s, then one of 5 s (the first step after an evaluation)
        train_s += 0.35 if step < 150 else 5.0
        st = p.observe_progress(step, train_s)
    assert st < 1.0, st  # averaged over 15 % of the training so far (8.5 s), not the 5 s step alone
