"""A small finished run (tiny BEiT-3, NKE, 3 steps) for the tests that evaluate or reopen one."""

from __future__ import annotations

import pytest
import torch

from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train


@pytest.fixture(scope="module")
def small_nke_run(train_data_dir, train_tokenizer, tmp_path_factory):
    """One per test module: tests may write into the run folder (eval files)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("small_nke_run")
    res = train(TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                            method="nke", steps=3, batch_size=8, val_evals=0, out=str(out), name="small"))
    torch.set_num_threads(before)
    assert res.status == "completed"
    return res
