"""The loop's validation hook: every val check is a "validation" progress event with the primary val RSUM and the
time without checks, and a callback that raises `StopRun` there ends the run cleanly: the best adapter is
published and evaluated, and the run folder says "pruned", not failed or interrupted."""

from __future__ import annotations

import json

import pytest

from mwa_cli.errors import ConfigError
from mwa_cli.runs_view import status
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import StopRun, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(data, tok, tmp_path, name):
    return TrainConfig(data_dir=str(data), backbone="beit3-tiny-test", tokenizer=str(tok), out=str(tmp_path),
                       name=name, method="mwa", steps=24, batch_size=8, lr=1e-3, seed=0, log_every=1, val_evals=4,
                       workers=0)


def test_validation_events_carry_the_primary_rsum_and_the_time(train_data_dir, train_tokenizer, tmp_path):
    seen = []
    res = train(_config(train_data_dir, train_tokenizer, tmp_path, "plain"),
                lambda event, data: seen.append(data) if event == "validation" else None)
    assert res.status == "completed"
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    checks = [r for r in rows if r["kind"] == "eval" and r["split"] == "val"]
    assert [d["step"] for d in seen] == [c["step"] for c in checks][:len(seen)] and seen[0]["step"] == 0
    for d, row in zip(seen, checks):
        assert d["val_primary"] == row["rsum"]  # the row records the same number (in the primary protocol)
        assert d["elapsed_s"] == pytest.approx(row["time_no_val_s"], abs=0.01)
    assert json.loads((res.run_dir / "timing.json").read_text())["status"] == "completed"


def test_stop_run_at_a_check_ends_the_run_as_pruned(train_data_dir, train_tokenizer, tmp_path):
    steps_after = []

    def progress(event: str, data: dict) -> None:
        if event == "step" and stopped:
            steps_after.append(data["step"])
        if event == "validation" and data["step"] > 0 and not stopped:
            stopped.append(data["step"])
            raise StopRun("pruned by the test")

    stopped: list[int] = []
    res = train(_config(train_data_dir, train_tokenizer, tmp_path, "pruned"), progress)
    assert res.status == "pruned" and res.exit_code == 0 and res.steps == stopped[0] < 24
    assert not steps_after  # no step after the check that stopped it
    timing = json.loads((res.run_dir / "timing.json").read_text())
    assert timing["status"] == "pruned" and timing["stop_reason"] == "pruned by the test"
    assert (res.run_dir / "eval.json").is_file() and (res.run_dir / "adapter_model.safetensors").is_file()
    assert status(res.run_dir) == "pruned"


def test_each_asked_training_time_gets_one_check_at_the_next_step(train_data_dir, train_tokenizer, tmp_path):
    def checked_steps(name: str, val_at: list[float]) -> list[int]:
        seen: list[int] = []
        config = _config(train_data_dir, train_tokenizer, tmp_path, name)
        config.val_at = val_at
        train(config, lambda event, data: seen.append(data["step"]) if event == "validation" else None)
        return seen

    plain = checked_steps("plain", [])
    # two times already passed at the first step after the zero-shot check: one check there; one past the end: none
    asked = checked_steps("asked", [1e-6, 1e-5, 1e5])
    assert 1 not in plain and asked == sorted({*plain, 1})


@pytest.mark.parametrize("val_at", [[0.0], [-3.0], [1e12]])
def test_asked_check_times_must_be_positive_seconds(val_at):
    with pytest.raises(ConfigError, match="val_at must hold training times in seconds, above 0 and under a year"):
        TrainConfig(data_dir="d", val_at=val_at).validate()
