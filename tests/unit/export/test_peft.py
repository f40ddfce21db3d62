"""`mwa export --format peft`: a LoRA run as a folder PEFT itself loads onto the same backbone, giving mwa's own
embeddings; the methods PEFT cannot express are refused, saying why."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mwa_cli.adapters.io import load_adapter, save_adapter
from mwa_cli.adapters.registry import apply_method
from mwa_cli.errors import ConfigError
from mwa_cli.export.peft import export_peft
from mwa_cli.models.presets import build_backbone

peft = pytest.importorskip("peft", reason="peft is in the dev extra: pip install -e '.[dev]'")


def _lora_run(path, options=None, method="lora"):
    torch.manual_seed(0)
    model, info = build_backbone("beit3-tiny-test")
    applied = apply_method(model, method, options)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in applied.trainable_named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)  # off their initial values (B starts at zero)
    save_adapter(path, model, applied, info)
    return path


def _inputs(model):
    g = torch.Generator().manual_seed(2)
    size = model.config.img_size
    return (torch.rand(3, 3, size, size, generator=g) * 2 - 1,
            torch.randint(5, 200, (3, 12), generator=g), torch.zeros(3, 12, dtype=torch.long))


@pytest.mark.parametrize("options", [None, {"targets": ["q_proj", "k_proj", "v_proj", "out_proj"], "rank": 4,
                                            "alpha": 4.0, "layers": "top-1", "train_heads": True}])
def test_peft_loads_it_onto_the_same_backbone_and_gives_mwas_embeddings(tmp_path, options):
    run = _lora_run(tmp_path / "run", options)
    summary = export_peft(run, tmp_path / "peft")
    torch.manual_seed(0)  # the random test backbone, rebuilt as the run's seed built it
    mwa_model, _, _ = load_adapter(run)
    mwa_model.eval()
    torch.manual_seed(0)
    base, _ = build_backbone("beit3-tiny-test")
    peft_model = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()
    config = peft.LoraConfig.from_pretrained(str(tmp_path / "peft"))
    assert config.r == (options or {}).get("rank", 8) and config.peft_type == "LORA"
    assert len(config.target_modules) == summary["target_modules"]
    assert all(".self_attn." in t and t.endswith((".A", ".B")) for t in config.target_modules)
    if options:
        assert sorted(config.modules_to_save) == ["language_head", "vision_head"]
    px, ids, mask = _inputs(base)
    with torch.no_grad():
        torch.testing.assert_close(peft_model.encode_image(px), mwa_model.encode_image(px), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(peft_model.encode_text(ids, mask), mwa_model.encode_text(ids, mask),
                                   rtol=1e-5, atol=1e-6)
        plain = build_backbone("beit3-tiny-test")[0].eval()
        assert not torch.allclose(plain.encode_image(px), mwa_model.encode_image(px))  # the adapter matters
    manifest = json.loads((tmp_path / "peft" / "mwa_peft.json").read_text())
    assert "logit_scale" in manifest["left_out"] and summary["left_out"] == ["logit_scale"]


@pytest.mark.parametrize("method,words", [("mwa", "Alignment Enhancer"), ("nke", "NKE"), ("full-ft", "every weight")])
def test_other_methods_are_refused_saying_what_peft_cannot_express(tmp_path, method, words):
    run = _lora_run(tmp_path / "run", method=method)
    with pytest.raises(ConfigError, match=words) as err:
        export_peft(run, tmp_path / "peft")
    assert "--format onnx" in err.value.hint
    assert not (tmp_path / "peft").exists()


def test_the_command(tmp_path):
    run = _lora_run(tmp_path / "run")
    res = CliRunner().invoke(app := __import__("mwa_cli.cli", fromlist=["app"]).app,
                             ["export", str(run), "--format", "peft", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["export"] == str((run / "export_peft").resolve())
    res = CliRunner().invoke(app, ["export", str(run), "--format", "peft"])
    assert res.exit_code == 2 and "already holds an export" in res.output
    assert CliRunner().invoke(app, ["export", str(run), "--format", "peft", "--overwrite"]).exit_code == 0
    res = CliRunner().invoke(app, ["export", str(run), "--format", "tflite"])
    assert res.exit_code == 2 and "choose onnx" in res.output
