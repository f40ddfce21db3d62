"""mwa_cli.runs.load_run: a run folder opened as training published it (the tiny backbone, a real short run)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from mwa_cli.errors import EXIT_CORRUPT, ConfigError, IntegrityError
from mwa_cli.runs import is_run_dir, load_run, read_run_config


@pytest.fixture(scope="module")
def run_dir(small_nke_run):
    return small_nke_run.run_dir


def test_load_run_rebuilds_the_published_adapter(run_dir, train_tokenizer):
    run = load_run(run_dir, device="cpu")
    assert run.folder == run_dir and run.method == "nke" and run.info.name == "beit3-tiny-test"
    assert run.config == json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert not run.model.training and run.device.type == "cpu" and run.precision == "fp32"
    assert run.tokenizer_path == str(train_tokenizer)
    ids, mask = run.tokenizer.encode_batch(["a scratch on the left"])
    assert ids.shape == (1, int(run.config["text_len"] or run.model.config.text_len))
    params = dict(run.model.named_parameters())
    saved = load_file(str(run_dir / "adapter_model.safetensors"))
    assert saved and all(torch.equal(params[n].detach(), t) for n, t in saved.items())
    # the adapter file names the same run; the tokenizer can be left out
    again = load_run(run_dir / "adapter_config.json", device="cpu", need_tokenizer=False)
    assert again.folder == run_dir and again.tokenizer is None
    assert torch.equal(again.model.encode_text(ids, mask), run.model.encode_text(ids, mask))


def test_precision_is_the_runs_own_unless_asked(run_dir, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    cfg = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    (copy / "config.json").write_text(json.dumps(dict(cfg, device="cpu", precision="bf16")), encoding="utf-8")
    assert load_run(copy, device="cpu", need_tokenizer=False).precision == "bf16"
    assert load_run(copy, device="cpu", precision="fp32", need_tokenizer=False).precision == "fp32"
    (copy / "config.json").write_text(json.dumps(dict(cfg, device="cuda", precision="bf16")), encoding="utf-8")
    assert load_run(copy, device="cpu", need_tokenizer=False).precision == "fp32"  # another kind of device


def test_what_is_not_a_run_is_refused_with_what_to_give(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no adapter_config.json") as err:
        load_run(tmp_path / "empty", device="cpu")
    assert "runs/<name>" in err.value.hint


def test_damaged_adapter_weights_are_refused(run_dir, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    weights = copy / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        load_run(copy, device="cpu")
    assert err.value.exit_code == EXIT_CORRUPT and "adapter_model.safetensors" in err.value.message


def test_read_run_config_is_tolerant(tmp_path, run_dir):
    assert read_run_config(run_dir)["method"] == "nke" and is_run_dir(run_dir)
    assert read_run_config(tmp_path) == {} and not is_run_dir(tmp_path)
    (tmp_path / "config.json").write_text("{half", encoding="utf-8")
    assert read_run_config(tmp_path) == {}
    (tmp_path / "config.json").write_text("[1, 2]", encoding="utf-8")
    assert read_run_config(tmp_path) == {}
