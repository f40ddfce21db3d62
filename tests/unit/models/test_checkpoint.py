"""Backbone weights loading: official .pth layout, safetensors, interpolation, and every bad file."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from mwa_cli.errors import CheckpointError
from mwa_cli.fileio import sha256_file
from mwa_cli.models.checkpoint import interpolate_positions, load_backbone_weights
from mwa_cli.models.presets import build_backbone

TINY = {"img_size": 32, "patch_size": 8, "vocab_size": 1000, "embed_dim": 64, "depth": 2, "num_heads": 4,
        "ffn_dim": 256, "max_text_positions": 1024, "layernorm_eps": 1e-05}


@pytest.fixture()
def reference(shared_dir):
    return shared_dir / "fixtures" / "beit3_tiny" / "weights.safetensors"


def test_official_pth_layout_under_model_and_module(tmp_path, reference):
    from safetensors.torch import load_file
    state = load_file(str(reference))
    for key in ("model", "module"):
        path = tmp_path / f"{key}.pth"
        torch.save({key: state, "epoch": 3}, path)
        model, info = build_backbone(TINY, str(path))
        assert torch.equal(model.state_dict()["logit_scale"], state["logit_scale"])
        assert info.weights_sha256 == sha256_file(path)


def test_safetensors_loads(reference):
    model, info = build_backbone(TINY, str(reference))
    assert info.weights_sha256 and len(info.weights_sha256) == 64


def test_position_table_is_interpolated_to_another_image_size(tmp_path, reference):
    from safetensors.torch import load_file
    state = load_file(str(reference))
    model, _ = build_backbone(dict(TINY, img_size=48), str(reference))
    table = model.state_dict()["beit3.encoder.embed_positions.A.weight"]
    assert table.shape[0] == (48 // 8) ** 2 + 3
    assert torch.equal(table[:3], state["beit3.encoder.embed_positions.A.weight"][:3])
    back = interpolate_positions(state["beit3.encoder.embed_positions.A.weight"], 16)
    assert torch.allclose(back, state["beit3.encoder.embed_positions.A.weight"], atol=1e-5)


def test_wrong_keys_are_listed(tmp_path, reference):
    from safetensors.torch import load_file
    state = load_file(str(reference))
    state["extra.weight"] = torch.zeros(1)
    del state["vision_head.weight"]
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        build_backbone(TINY, str(path))
    assert "missing keys: vision_head.weight" in err.value.message
    assert "unexpected keys: extra.weight" in err.value.message


def test_wrong_shapes_are_listed(reference):
    with pytest.raises(CheckpointError, match=r"wrong shape: beit3.text_embed.weight \(1000, 64\) vs \(2000, 64\)"):
        build_backbone(dict(TINY, vocab_size=2000), str(reference))


def test_truncated_and_empty_and_garbage_files(tmp_path, reference):
    data = reference.read_bytes()
    trunc = tmp_path / "t.safetensors"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        build_backbone(TINY, str(trunc))
    pth = tmp_path / "t.pth"
    torch.save({"model": {"a": torch.zeros(1000)}}, pth)
    pth.write_bytes(pth.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cannot read"):
        build_backbone(TINY, str(pth))
    empty = tmp_path / "e.pth"
    empty.touch()
    with pytest.raises(CheckpointError, match="empty"):
        build_backbone(TINY, str(empty))
    with pytest.raises(CheckpointError, match="not found"):
        build_backbone(TINY, str(tmp_path / "missing.pth"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/mwa_pwned",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"model": _Evil()}, fh)
    if os.path.exists("/tmp/mwa_pwned"):
        os.remove("/tmp/mwa_pwned")
    with pytest.raises(CheckpointError, match="refused"):
        build_backbone(TINY, str(path))
    assert not os.path.exists("/tmp/mwa_pwned")


def test_non_tensor_state_is_refused(tmp_path):
    path = tmp_path / "cfg.pth"
    torch.save({"model": {"a": 1}}, path)
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_backbone_weights(build_backbone(TINY)[0], path)


def test_config_file_backbone(tmp_path, reference):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    model, info = build_backbone(str(cfg), str(reference))
    assert info.name == "config:tiny.json" and model.config.embed_dim == 64
