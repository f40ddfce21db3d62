"""`mwa train --log tensorboard`: the metric rows as TensorBoard events in RUN/tensorboard, read back with
TensorBoard's own reader; off by default; a clear error when the package is missing."""

from __future__ import annotations

import json

import pytest

from mwa_cli.errors import ConfigError
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(data, tok, out, **kw):
    cfg = TrainConfig(data_dir=str(data), backbone="beit3-tiny-test", tokenizer=str(tok), out=str(out), method="mwa",
                      steps=4, batch_size=8, log_every=1, val_evals=1, workers=0, device="cpu", **kw)
    result = train(cfg)
    assert result.status == "completed", result.message
    return result.run_dir


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_the_curves_read_back_equal_metrics_jsonl(train_data_dir, train_tokenizer, tmp_path):
    run = _train(train_data_dir, train_tokenizer, tmp_path, name="tb", log="tensorboard")
    got = _scalars(run / "tensorboard")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [s for s, _ in got["train/loss"]] == [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert [v for _, v in got["train/loss"]] == pytest.approx([r["loss"] for r in train_rows])
    assert [v for _, v in got["train/learning_rate"]] == pytest.approx([r["lr"] for r in train_rows])
    assert [v for _, v in got["train/peak_memory_gib"]] == pytest.approx([r["mem_gib"] for r in train_rows])
    assert [v for _, v in got["train/step_time_s"]] == pytest.approx([8 / r["samples_per_s"] for r in train_rows])
    val = [r for r in rows if r["kind"] == "eval"]
    assert [(s, v) for s, v in got["val/rsum"]] == pytest.approx([(r["step"], r["rsum"]) for r in val])
    final = json.loads((run / "eval.json").read_text())
    assert got["test/rsum"] == [(4, pytest.approx(final["rsum"]))]
    assert json.loads((run / "config.json").read_text())["log"] == "tensorboard"


def test_off_by_default(train_data_dir, train_tokenizer, tmp_path):
    run = _train(train_data_dir, train_tokenizer, tmp_path, name="plain")
    assert not (run / "tensorboard").exists()


def test_a_missing_package_or_an_unknown_logger_is_refused_before_anything_runs(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match="needs the tensorboard package") as err:
        TrainConfig(data_dir=str(tmp_path), backbone="beit3-tiny-test", log="tensorboard").validate()
    assert "mwa-cli[log]" in err.value.hint
    with pytest.raises(ConfigError, match="unknown --log 'mlflow'"):
        TrainConfig(data_dir=str(tmp_path), backbone="beit3-tiny-test", log="mlflow").validate()
