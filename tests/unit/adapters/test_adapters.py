"""MultiWay-Adapter injection, step-0 equivalence, freezing, parameter accounting and artefact round trips."""

from __future__ import annotations

import json

import pytest
import torch

from mwa_cli.adapters.io import CONFIG_FILE, WEIGHTS_FILE, load_adapter, save_adapter
from mwa_cli.adapters.layers import select_layers
from mwa_cli.adapters.registry import apply_method, names
from mwa_cli.errors import CheckpointError, ConfigError, IntegrityError
from mwa_cli.models.presets import build_backbone


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, 32, 32, generator=g)
    ids = torch.randint(4, 500, (3, 32), generator=g)
    mask = torch.zeros(3, 32, dtype=torch.long)
    mask[1, 12:] = 1
    return images, ids, mask


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("beit3-tiny-test")


@pytest.mark.parametrize("method,options", [("mwa", None), ("nke", None), ("lora", None),
                                            ("mwa", {"layers": "top-1"}), ("mwa", {"preset": "paper-code"})])
def test_step0_equivalence(method, options):
    model, _ = _tiny()
    model.eval()
    images, ids, mask = _inputs()
    with torch.no_grad():
        ref_i, ref_t = model.encode_image(images), model.encode_text(ids, mask)
    apply_method(model, method, options)
    with torch.no_grad():
        out_i, out_t = model.encode_image(images), model.encode_text(ids, mask)
    if options == {"preset": "paper-code"}:
        # The official AE is not zero-initialised: it perturbs the backbone at step 0, as documented.
        assert (out_i - ref_i).abs().max() > 1e-4
    else:
        assert (out_i - ref_i).abs().max() <= 1e-6
        assert (out_t - ref_t).abs().max() <= 1e-6


@pytest.mark.parametrize("method", names())
def test_only_trainables_get_gradients_and_change(method):
    model, _ = _tiny()
    applied = apply_method(model, method)
    model.train()
    # Move zero-initialised adapters off zero so every adapter weight receives a gradient.
    with torch.no_grad():
        for name, p in applied.trainable_named_parameters():
            p.add_(torch.randn_like(p) * 0.02)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, _ in applied.trainable_named_parameters()}
    images, ids, mask = _inputs(1)
    if not trainable:
        assert method == "frozen"
        return
    opt = torch.optim.AdamW([p for _, p in applied.trainable_named_parameters()], lr=1e-2)
    sim = model.encode_image(images) @ model.encode_text(ids, mask).T * model.logit_scale.exp()
    loss = torch.nn.functional.cross_entropy(sim, torch.arange(3))
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad <= trainable
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed <= trainable
    assert changed, "an optimizer step must change some trainable weight"


def test_frozen_trains_nothing_and_full_ft_everything():
    model, _ = _tiny()
    assert apply_method(model, "frozen").trainable_params() == 0
    model, _ = _tiny()
    applied = apply_method(model, "full-ft")
    assert applied.trainable_params() == applied.total_params()


def test_mwa_which_modules_are_where():
    model, _ = _tiny()
    applied = apply_method(model, "mwa", {"layers": [1]})
    names = {n for n, _ in applied.trainable_named_parameters()}
    assert any(".layers.1.mwa.nke.A.down.weight" in n for n in names)
    assert any(".layers.1.mwa.ae.fc2.weight" in n for n in names)
    assert not any(".layers.0." in n for n in names)
    assert "logit_scale" in names and "vision_head.weight" not in names
    assert applied.lowest_trainable_layer == 1


def test_default_mwa_stays_within_three_percent_for_base_and_large():
    for preset in ("beit3-base", "beit3-large"):
        model, _ = build_backbone(preset, device="meta")
        backbone = sum(p.numel() for p in model.parameters())
        applied = apply_method(model, "mwa")
        assert applied.added_params() <= 0.03 * backbone
        # the widest multiple of 16 within the budget, counted on real modules (not by the sizing formula)
        width = applied.options["ae_width"]
        assert width % 16 == 0
        wider = apply_method(build_backbone(preset, device="meta")[0], "mwa", {"ae_width": width + 16})
        assert wider.added_params() > 0.03 * backbone


@pytest.mark.slow  # allocates the official full-width adapters of beit3-base and -large (~270 M parameters)
def test_paper_code_preset_reproduces_official_parameter_count():
    model, _ = build_backbone("beit3-base", device="meta")
    assert apply_method(model, "mwa", {"preset": "paper-code"}).added_params() == 59_122_176
    model, _ = build_backbone("beit3-large", device="meta")
    assert apply_method(model, "mwa", {"preset": "paper-code"}).added_params() == 207_989_760


def test_param_groups_no_decay_and_layer_decay():
    model, _ = _tiny()
    applied = apply_method(model, "full-ft")
    groups = applied.param_groups(lr=1.0, weight_decay=0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["logit_scale"]["weight_decay"] == 0.0
    assert by_name["beit3.encoder.layers.0.ffn.A.fc1.bias"]["weight_decay"] == 0.0
    assert by_name["beit3.encoder.layers.0.ffn.A.fc1.weight"]["weight_decay"] == 0.05
    assert by_name["beit3.encoder.layers.0.ffn.A.fc1.weight"]["lr"] == pytest.approx(0.5**2)  # depth 2: id 1
    assert by_name["beit3.text_embed.weight"]["lr"] == pytest.approx(0.5**3)
    assert by_name["vision_head.weight"]["lr"] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_layer_selection():
    assert select_layers("all", 4) == [0, 1, 2, 3]
    assert select_layers("top-2", 4) == [2, 3]
    assert select_layers("3,1", 4) == [1, 3]
    for bad in ("top-9", "x", "7"):
        with pytest.raises(ConfigError):
            select_layers(bad, 4)


def test_unknown_method_and_options_are_refused():
    model, _ = _tiny()
    with pytest.raises(ConfigError, match="unknown method"):
        apply_method(model, "adapterx")
    with pytest.raises(ConfigError, match="unknown options"):
        apply_method(model, "mwa", {"rnk": 4})


@pytest.mark.parametrize("method,options", [("mwa", None), ("nke", {"layers": "top-1"}), ("lora", None),
                                            ("full-ft", None), ("frozen", None)])
def test_artefact_round_trip_is_bit_exact(tmp_path, method, options):
    model, info = _tiny()
    applied = apply_method(model, method, options)
    with torch.no_grad():
        for _, p in applied.trainable_named_parameters():
            p.add_(torch.randn_like(p))
    save_adapter(tmp_path, model, applied, info)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert cfg["method"] == method and cfg["backbone"]["name"] == "beit3-tiny-test"
    model2, applied2, _ = load_adapter(tmp_path, model=_tiny(seed=1)[0], info=info)
    got = dict(applied2.trainable_named_parameters())
    for name, p in applied.trainable_named_parameters():
        assert torch.equal(p, got[name]), name
    assert applied2.options == applied.options


def test_loading_onto_a_mismatching_backbone_names_the_mismatch(tmp_path):
    model, info = _tiny()
    applied = apply_method(model, "mwa")
    save_adapter(tmp_path, model, applied, info)
    other, other_info = build_backbone({"img_size": 32, "patch_size": 8, "vocab_size": 8192, "embed_dim": 64,
                                        "depth": 3, "num_heads": 4, "ffn_dim": 256, "text_len": 32})
    with pytest.raises(CheckpointError, match="depth: adapter 2 vs backbone 3"):
        load_adapter(tmp_path, model=other, info=other_info)
    info.weights_sha256, cfg_path = "a" * 64, tmp_path / CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    cfg["backbone"]["weights_sha256"] = "b" * 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="trained on backbone weights bbbbbbbbbbbb"):
        load_adapter(tmp_path, model=_tiny()[0], info=info)


def test_truncated_adapter_file_is_a_clear_error(tmp_path):
    model, info = _tiny()
    applied = apply_method(model, "mwa")
    save_adapter(tmp_path, model, applied, info)
    data = (tmp_path / WEIGHTS_FILE).read_bytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError, match="is damaged"):  # its sha256 differs from adapter_config.json's
        load_adapter(tmp_path, model=_tiny()[0], info=info)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text(encoding="utf-8"))
    del cfg["files"]  # an adapter from before hashes were recorded: safetensors' own error, as clear
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_adapter(tmp_path, model=_tiny()[0], info=info)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_adapter(tmp_path / "elsewhere")
    (tmp_path / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match="no adapter_config.json"):
        load_adapter(tmp_path)
