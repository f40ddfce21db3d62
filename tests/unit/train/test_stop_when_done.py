"""Stop when done, end to end on the tiny backbone: a scripted validation curve stops the run early, the published
adapter is the checkpoint of the best step, and the run says why it ended."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mwa_cli.train.checkpoint import load_checkpoint
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CURVE = [10.0, 20.0, 60.0, 40.0, 50.0, 30.0, 20.0, 10.0, 5.0]  # val RSUM of successive checks: best at the 3rd


@pytest.fixture()
def scripted_val(monkeypatch):
    """Real evaluations, but the val split's RSUM follows CURVE (so the best step is known in advance)."""
    import mwa_cli.eval.evaluate as ev

    real = ev.evaluate_model
    calls = []

    def fake(*args, **kwargs):
        result, top = real(*args, **kwargs)
        if result["split"] == "val":
            rsum = CURVE[min(len(calls), len(CURVE) - 1)]  # scripted for whichever protocol is primary
            result = dict(result, rsum=rsum, label_level=dict(result["label_level"], rsum=rsum))
            calls.append(result["rsum"])
        return result, top

    monkeypatch.setattr(ev, "evaluate_model", fake)
    return calls


def test_early_stop_publishes_the_best_checkpoint(train_data_dir, train_tokenizer, tmp_path, scripted_val):
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    run_dir = tmp_path / "runs" / "stop"

    def progress(event: str, data: dict) -> None:
        if event == "checkpoint":  # the resumable checkpoint of every step
            state = load_checkpoint(run_dir / "checkpoint" / "last")
            snapshots[int(data["step"])] = state["trainer"]["trainables"]

    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(tmp_path / "runs"), name="stop", method="mwa", steps=40, batch_size=8, lr=1e-3,
                      seed=0, checkpoint_every=1, log_every=1, val_evals=8, patience=3, workers=0)
    res = train(cfg, progress)
    assert res.status == "completed", res.message
    timing = json.loads((res.run_dir / "timing.json").read_text())
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    checks = [r for r in rows if r["kind"] == "eval" and r["split"] == "val"]
    # checks: step 0 and the evenly spaced steps; stopped three checks after the best (the 3rd, 60.0)
    assert [c["rsum"] for c in checks] == CURVE[:6]
    best_step = checks[2]["step"]
    assert timing["best"]["step"] == best_step and timing["best"]["val_rsum"] == 60.0
    assert "early stop" in timing["stop_reason"] and res.steps == checks[-1]["step"] < 40
    assert "published adapter is the best one" in res.message
    published = load_file(str(res.run_dir / "adapter_model.safetensors"))
    at_best = snapshots[best_step]
    assert published.keys() == at_best.keys()
    assert all(torch.equal(published[k], at_best[k]) for k in published)
    later = snapshots[max(snapshots)]  # trained on after the best: different weights, not published
    assert max(snapshots) > best_step and any(not torch.equal(published[k], later[k]) for k in published)
    assert (res.run_dir / "eval_ranks.json").is_file()


def test_without_patience_the_run_goes_to_its_end(train_data_dir, train_tokenizer, tmp_path, scripted_val):
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(tmp_path / "runs"), name="full", method="mwa", steps=20, batch_size=8, lr=1e-3,
                      seed=0, log_every=5, val_evals=4, patience=0, workers=0)
    res = train(cfg)
    timing = json.loads((res.run_dir / "timing.json").read_text())
    assert res.steps == 20 and timing["stop_reason"] is None
    assert timing["best"]["step"] == 8 and timing["best"]["val_rsum"] == 60.0  # checks at 0, 4, 8, 12, 16, final 20


def test_no_early_stop_before_half_the_run(train_data_dir, train_tokenizer, tmp_path, scripted_val):
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(tmp_path / "runs"), name="guard", method="mwa", steps=40, batch_size=8, lr=1e-3,
                      seed=0, log_every=10, val_evals=19, patience=1, workers=0)
    res = train(cfg)
    timing = json.loads((res.run_dir / "timing.json").read_text())
    # checks every 2 steps: RSUM falls first at step 6 (patience 1 is used up), but stopping waits for step 20
    assert res.steps == 20 and "early stop" in timing["stop_reason"]
    assert timing["best"]["step"] == 4


def test_repeated_captions_keep_the_best_label_level_adapter(train_data_dir, train_tokenizer, tmp_path,
                                                              monkeypatch):
    """When captions repeat in val the instance RSUM cannot see a collapse: the best adapter and early stopping
    follow the label-level RSUM (here rising while the instance RSUM falls)."""
    import mwa_cli.eval.evaluate as ev

    real, calls = ev.evaluate_model, []

    def fake(*args, **kwargs):
        result, top = real(*args, **kwargs)
        if result["split"] == "val":
            i = len(calls)
            calls.append(i)
            result = dict(result, rsum=100.0 - i, primary_protocol="label_level",
                          label_level=dict(result["label_level"], rsum=[10.0, 20.0, 60.0, 50.0, 40.0][min(i, 4)]))
        return result, top

    monkeypatch.setattr(ev, "evaluate_model", fake)
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(tmp_path / "runs"), name="level", method="mwa", steps=20, batch_size=8, lr=1e-3,
                      seed=0, log_every=5, val_evals=4, patience=0, workers=0)
    res = train(cfg)
    timing = json.loads((res.run_dir / "timing.json").read_text())
    assert timing["best"]["step"] == 8 and timing["best"]["val_rsum"] == 60.0  # checks at 0, 4, 8, 12, 16, 20
