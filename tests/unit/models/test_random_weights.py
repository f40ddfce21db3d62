"""`--weights none`: a randomly initialised backbone asked for by name, rebuilt the same by every later command."""

from __future__ import annotations

import json

import pytest
import torch

from mwa_cli.adapters.io import load_adapter, save_adapter
from mwa_cli.adapters.registry import apply_method
from mwa_cli.errors import ConfigError
from mwa_cli.models.presets import build_backbone, require_weights
from mwa_cli.models.sources import NO_WEIGHTS, note_random_weights, random_weights_warning


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_none_builds_a_random_backbone_even_for_the_built_in_one():
    pretrained, info_p = build_backbone("beit3-mini")
    torch.manual_seed(3)
    random, info_r = build_backbone("beit3-mini", NO_WEIGHTS)
    assert info_r.random_weights and info_r.weights is None and info_r.weights_sha256 is None
    assert not info_p.random_weights and info_p.weights_sha256
    key = "beit3.encoder.layers.0.ffn.A.fc1.weight"
    assert not torch.equal(pretrained.state_dict()[key], random.state_dict()[key])
    torch.manual_seed(3)
    again, _ = build_backbone("beit3-mini", "None")  # spelled any way
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in random.state_dict().items())


def test_require_weights_passes_the_request_on():
    assert require_weights("beit3-large", "none") == NO_WEIGHTS
    with pytest.raises(ConfigError, match="no pretrained weights"):
        require_weights("beit3-large", None)


def test_a_hugging_face_backbone_refuses_none():
    with pytest.raises(ConfigError, match="always built from its own pretrained files"):
        build_backbone("hf:some/model", NO_WEIGHTS)


def test_an_adapter_folder_records_it_and_rebuilds_the_same_backbone(tmp_path):
    torch.manual_seed(0)
    model, info = build_backbone("beit3-tiny-test", NO_WEIGHTS)
    applied = apply_method(model, "lora")
    save_adapter(tmp_path, model, applied, info)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["backbone"]["random_weights"] is True
    torch.manual_seed(0)
    again, _, info2 = load_adapter(tmp_path)  # no --weights, no config.json: the adapter says it was random
    assert info2.random_weights
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_the_warning_names_each_source_once_then_is_forgotten():
    note_random_weights("runs/a")
    note_random_weights("runs/a")
    note_random_weights("runs/b")
    text = random_weights_warning()
    assert text.startswith("runs/a, runs/b: the backbone has random weights (--weights none)")
    assert random_weights_warning() is None
