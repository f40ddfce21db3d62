"""BEiT-3 backbone fidelity against Microsoft torchscale reference outputs, and preset key/shape equality."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mwa_cli.errors import ConfigError
from mwa_cli.models.beit3 import BEiT3Config, BEiT3Retrieval
from mwa_cli.models.presets import build_backbone

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(shared_dir):
    folder = shared_dir / "fixtures" / "beit3_tiny"
    model = BEiT3Retrieval.from_config(json.loads((folder / "config.json").read_text())).eval()
    model.load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)
    return model, load_file(str(folder / "io.safetensors"))


def test_image_only_encoder_matches_torchscale(tiny):
    model, io = tiny
    with torch.no_grad():
        out = model.beit3(visual_tokens=io["image"])
    assert (out - io["vision_encoder_out"]).abs().max() <= TOL


def test_text_only_encoder_matches_torchscale_including_padding(tiny):
    model, io = tiny
    assert io["padding_mask"].sum() > 0, "fixture must contain padded positions"
    with torch.no_grad():
        out = model.beit3(textual_tokens=io["text_ids"], text_padding_position=io["padding_mask"])
    assert (out - io["text_encoder_out"]).abs().max() <= TOL


def test_joint_encoder_matches_torchscale(tiny):
    model, io = tiny
    with torch.no_grad():
        out = model.beit3(textual_tokens=io["text_ids"], visual_tokens=io["image"],
                          text_padding_position=io["padding_mask"])
    assert (out - io["joint_encoder_out"]).abs().max() <= TOL


def test_normalised_embeddings_match_torchscale(tiny):
    model, io = tiny
    with torch.no_grad():
        img = model.encode_image(io["image"])
        txt = model.encode_text(io["text_ids"], io["padding_mask"])
    assert (img - io["vision_cls"]).abs().max() <= TOL
    assert (txt - io["language_cls"]).abs().max() <= TOL
    assert torch.allclose(img.norm(dim=-1), torch.ones(len(img)), atol=1e-6)


def test_frozen_prefix_does_not_change_outputs(tiny):
    model, io = tiny
    ref = model.encode_image(io["image"]).detach()
    model.set_frozen_prefix(1)
    try:
        assert torch.equal(model.encode_image(io["image"]).detach(), ref)
    finally:
        model.set_frozen_prefix(0)


@pytest.mark.parametrize("preset,size", [("beit3-base", "base"), ("beit3-large", "large")])
def test_preset_state_dict_equals_official_keys_and_shapes(shared_dir, preset, size):
    model, _ = build_backbone(preset, device="meta")
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = {}
    for line in (shared_dir / "fixtures" / f"beit3_keys_{size}_224.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            expected[key] = json.loads(shape)
    assert got == expected


def test_config_rejects_unknown_keys_with_the_accepted_names():
    with pytest.raises(ConfigError) as err:
        BEiT3Config.from_dict({"embed_dim": 64, "layers": 2})
    assert "layers" in err.value.message and "depth" in err.value.hint


def test_wrong_image_size_is_a_clear_error():
    model, _ = build_backbone("beit3-tiny-test")
    with pytest.raises(ValueError, match="expected 32x32"):
        model.encode_image(torch.zeros(1, 3, 64, 64))
