"""`train(cfg)` works on its own resolved copy: the caller's TrainConfig is unchanged afterwards, while the run
records what was resolved (learning rate, run name, batch size)."""

from __future__ import annotations

import copy
import json

import pytest

from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_leaves_the_callers_config_as_given(train_data_dir, train_tokenizer, tmp_path):
    # lr, name and batch size left to the run: each is resolved, none written back into `cfg`
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(tmp_path), method="mwa", steps=2, batch_size=" Auto ", seed=0, val_evals=0,
                      workers=0, method_options={"layers": "top-1"})
    given = copy.deepcopy(cfg)
    res = train(cfg)
    assert res.status == "completed", res.message
    assert cfg == given
    record = json.loads((res.run_dir / "config.json").read_text())
    assert record["lr"] is not None and record["name"] == res.run_dir.name and record["batch_size"] == 32
    assert record["auto_resolved"] == ["lr", "batch_size"]
