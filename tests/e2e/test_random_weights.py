"""`mwa train --weights none` works to the end, and every later command (eval, export, index, search) rebuilds the
same random backbone and says, in one warning line, that its weights are random."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mwa_cli.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
WARNING = "the backbone has random weights (--weights none)"


def _mwa(*args: str):
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res


def _warned(res) -> bool:
    return WARNING in " ".join(res.stderr.split())


@pytest.fixture(scope="module")
def random_run(train_data_dir, train_tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    res = _mwa("train", str(train_data_dir), "--backbone", "beit3-tiny-test", "--weights", "none", "--tokenizer",
               str(train_tokenizer), "--method", "mwa", "--steps", "2", "--device", "cpu", "--workers", "0",
               "--out", str(out), "--name", "rand")
    assert _warned(res)
    return out / "rand"


def test_the_run_finishes_with_its_final_evaluation(random_run):
    for name in ("eval.json", "timing.json", "adapter_model.safetensors"):
        assert (random_run / name).is_file(), name
    assert json.loads((random_run / "config.json").read_text())["weights"] == "none"
    assert json.loads((random_run / "adapter_config.json").read_text())["backbone"]["random_weights"] is True


def test_mwa_eval_rebuilds_the_same_model(random_run):
    res = _mwa("eval", str(random_run), "--json", "--device", "cpu")
    assert _warned(res)
    trained = json.loads((random_run / "eval.json").read_text())
    assert json.loads(res.stdout)["rsum"] == pytest.approx(trained["rsum"])


def test_export_index_and_search_say_so(random_run, tmp_path):
    res = _mwa("export", str(random_run), "--format", "onnx", "--out", str(tmp_path / "exp"), "--json")
    assert _warned(res)
    assert json.loads((tmp_path / "exp" / "export.json").read_text())["random_weights"] is True
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    res = _mwa("index", str(photos), "--adapter", str(random_run), "--out", str(tmp_path / "idx"), "--device", "cpu",
               "--workers", "1", "--json")
    assert _warned(res)
    res = _mwa("search", "a red scratch", "--index", str(tmp_path / "idx"), "--json")
    assert _warned(res)
    res = _mwa("search", "a red scratch", "--index", str(tmp_path / "idx"), "--model", str(tmp_path / "exp"),
               "--json")
    assert _warned(res)
