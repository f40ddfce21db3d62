"""One number per run: the evaluation `mwa train` writes equals `mwa eval RUN` exactly (same code, precision,
batch size and arithmetic), the precision is recorded, and evaluating another split never replaces the run's number.
Trained with several DataLoader workers, the GPU default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mwa_cli.eval.evaluate import evaluate_path, evaluation_numerics
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import train
from tests.helpers.paths import REPO

METRIC_KEYS = ("rsum", "mean_recall", "i2t", "t2i", "per_label", "n_images", "n_captions")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, train_data_dir, train_tokenizer) -> Path:
    out = tmp_path_factory.mktemp("one")
    cfg = TrainConfig(data_dir=str(train_data_dir), backbone="beit3-tiny-test", tokenizer=str(train_tokenizer),
                      out=str(out), name="r", method="mwa", steps=6, batch_size=8, lr=1e-3, seed=0, val_evals=1,
                      workers=2, eval_batch_size=5)
    result = train(cfg)
    assert result.status == "completed", result.message
    return out / "r"


def test_train_and_eval_give_the_same_number(finished_run):
    written = json.loads((finished_run / "eval.json").read_text())
    assert written["numerics"] == {"precision": "fp32", "batch_size": 5, "device": "cpu", "tf32": False}
    again = evaluate_path(finished_run, write=False)  # defaults: the run's own precision and batch size
    for key in METRIC_KEYS:
        assert again[key] == written[key], key


@pytest.mark.slow  # a real subprocess or several commands: seconds
def test_eval_of_another_split_keeps_the_runs_number(finished_run):
    before = (finished_run / "eval.json").read_bytes()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "mwa_cli", "eval", str(finished_run), "--split", "val", "--json"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["split"] == "val"
    assert (finished_run / "eval.json").read_bytes() == before
    assert json.loads((finished_run / "eval_val.json").read_text())["split"] == "val"
    bad = subprocess.run([sys.executable, "-m", "mwa_cli", "eval", str(finished_run), "--split", "train"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown split 'train'" in bad.stderr
    assert (finished_run / "eval.json").read_bytes() == before


def test_eval_of_a_missing_folder_names_it(tmp_path):
    from mwa_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        evaluate_path(tmp_path / "nope", write=False)


def test_evaluation_numerics_turn_tf32_off_and_restore_it():
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with evaluation_numerics():
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
