"""The end of a run in the budget: the last checkpoint, the published weights written at the measured checkpoint
write speed and read back from the page cache, and the final evaluation's model build (full fine-tuning of Large
wrote ~8 GB after its last step that the reserve did not hold)."""

from __future__ import annotations

import pytest

from mwa_cli.train.budget import BudgetPlanner, EndOfRun, end_of_run

GB = 2**30


def _planner(**kw) -> BudgetPlanner:
    return BudgetPlanner(budget_s=75.0, deadline=75.0, val_items=0, final_items=100, val_evals=0,
                         checkpoint_every=0, checkpoint_minutes=10.0, batch_size=32, clock=lambda: 10.0, **kw)


def test_the_end_scales_with_what_is_written():
    end = EndOfRun(rebuild_s=4.0, published_bytes=1 * GB, state_bytes=lambda: 3 * GB, read_bytes_per_s=GB / 0.5)
    assert end.seconds(6.0) == pytest.approx(6.0 + 2.0 + 0.5 + 4.0)  # checkpoint + publish (write, read) + rebuild
    slow_disk = EndOfRun(rebuild_s=4.0, published_bytes=1 * GB, state_bytes=lambda: 3 * GB, read_bytes_per_s=GB)
    assert slow_disk.seconds(12.0) - end.seconds(6.0) == pytest.approx(6.0 + 2.0 + 0.5)  # the write, not the read


def test_the_plan_reserves_it():
    plain = _planner()
    with_end = _planner(end=EndOfRun(rebuild_s=4.0, published_bytes=1 * GB, state_bytes=lambda: 3 * GB,
                                     read_bytes_per_s=GB))
    for p in (plain, with_end):
        p.observe_eval(0.2 + 100 * 0.01, 100)
        p.observe_checkpoint(6.0)
    assert with_end.end_s == pytest.approx(13.0)
    assert with_end.final_reserve_s() - plain.final_reserve_s() == pytest.approx(13.0 - 0.5 * 6.0)
    assert sum(with_end.reserve_parts().values()) == with_end.final_reserve_s()
    total_plain, _ = plain.plan(10, 0.1, None, now=10.0)
    total_end, _ = with_end.plan(10, 0.1, None, now=10.0)
    assert total_plain - total_end == pytest.approx(100, abs=1)  # 10 s less for steps of 0.1 s
    assert with_end.must_stop(total_end, 10**6, set(), now=75.0 - with_end.final_reserve_s() - 0.05)
    assert _planner(end=with_end.end).state().keys() >= {"end_s"}


def test_the_sizes_come_from_the_trainer():
    from mwa_cli.train.trainer import build_trainer

    trainer = build_trainer("beit3-tiny-test", "full-ft", device="cpu", lr=1e-3, total_steps=2, drop_path=0.0)
    end = end_of_run(trainer, rebuild_s=0.5)
    params = sum(p.numel() * 4 for p in trainer.model.parameters() if p.requires_grad)
    assert end.published_bytes == params
    assert end.state_bytes() == params  # no optimizer state before the first step
    trainer.step(trainer.random_batch(4))
    assert 2.9 * params < end.state_bytes() < 3 * params + 4096  # AdamW: two moments per weight that had a gradient


def test_before_any_checkpoint_is_timed_the_end_is_reserved_at_the_assumed_write_speed():
    from mwa_cli.train.budget import ASSUMED_READ_BYTES_PER_S, ASSUMED_WRITE_BYTES_PER_S

    # full fine-tuning of Large: 2.7 GB of weights, 8.1 GB with both AdamW moments, none of it timed yet
    weights, state = 2.7e9, 8.1e9
    end = EndOfRun(rebuild_s=6.0, published_bytes=int(weights), state_bytes=lambda: int(state))
    with_end, plain = _planner(end=end), _planner()
    for p in (plain, with_end):
        p.observe_eval(0.2 + 100 * 0.01, 100)
    expected = (state + weights) / ASSUMED_WRITE_BYTES_PER_S + weights / ASSUMED_READ_BYTES_PER_S + 6.0
    assert end.assumed_seconds() == pytest.approx(expected)
    assert with_end.final_reserve_s() - plain.final_reserve_s() == pytest.approx(expected)
    total_plain, _ = plain.plan(10, 0.1, None, now=10.0)
    total_end, _ = with_end.plan(10, 0.1, None, now=10.0)
    assert total_plain - total_end == pytest.approx(expected / 0.1, abs=1)
    with_end.observe_checkpoint(2.0)  # once one is timed, its speed replaces the assumption
    assert with_end.final_reserve_s() - plain.final_reserve_s() == pytest.approx(end.seconds(2.0))


def test_a_large_end_measures_the_disk_it_will_write_to(tmp_path, monkeypatch):
    from mwa_cli.train import budget
    from mwa_cli.train.trainer import build_trainer

    speed = budget.disk_speed(tmp_path, nbytes=4 * 2**20)
    assert speed is not None and speed.write > 0 and speed.read > 0
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    assert budget.disk_speed(tmp_path / "missing") is None  # cannot write there: no figure, no error

    trainer = build_trainer("beit3-tiny-test", "full-ft", device="cpu", lr=1e-3, total_steps=2, drop_path=0.0)
    small = end_of_run(trainer, rebuild_s=0.5, probe_dir=tmp_path)
    assert small.write_bytes_per_s == budget.ASSUMED_WRITE_BYTES_PER_S  # a few MB: not worth a probe
    monkeypatch.setattr(budget, "PROBE_ABOVE_BYTES", 0)
    monkeypatch.setattr(budget, "disk_speed", lambda folder, nbytes=0: budget.DiskSpeed(write=123e6, read=2e9))
    large = end_of_run(trainer, rebuild_s=0.5, probe_dir=tmp_path)
    assert (large.write_bytes_per_s, large.read_bytes_per_s) == (123e6, 2e9)
    assert large.assumed_seconds() == pytest.approx(large.seconds(large.state_bytes() / 123e6))
    assert end_of_run(trainer, rebuild_s=0.5).write_bytes_per_s == budget.ASSUMED_WRITE_BYTES_PER_S  # no folder


def test_a_budgeted_run_records_what_its_end_was_reserved_and_took(tmp_path):
    """timing.json's "end": the reserve's parts when training stopped, and the seconds each part took."""
    import json

    from mwa_cli.train.budget import EndRecord

    end = EndRecord({"val_s": 1.0, "final_eval_s": 2.0, "end_s": 3.0, "margin_s": 0.5})
    end.taken["checkpoint_s"] = 1.25
    with end.timing("final_eval_s"):
        pass
    rec = end.record()
    assert rec["reserved_s"] == 6.5 and rec["reserved"]["end_s"] == 3.0
    assert set(rec["taken"]) == {"checkpoint_s", "final_eval_s"} and 1.25 <= rec["taken_s"] < 1.5
    json.dumps(rec)  # what timing.json holds
