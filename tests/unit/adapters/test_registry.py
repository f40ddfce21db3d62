"""The method registry: option validation without a model, learning rates from the method modules, refusals, and
adapter artefacts written by the version before methods became modules (tests/fixtures/previous_adapters)."""

from __future__ import annotations

import importlib.util
import json
import re
import types
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file

from mwa_cli.adapters import registry
from mwa_cli.adapters.io import CONFIG_FILE, load_adapter, save_adapter
from mwa_cli.adapters.methods.base import AdapterMethod, LayerSpec, MethodConfig
from mwa_cli.errors import ConfigError
from mwa_cli.models.presets import preset_names
from mwa_cli.train.config import TrainConfig, config_from_run
from tests.helpers.paths import FIXTURES as _FIXTURES

FIXTURES = _FIXTURES / "previous_adapters"
_spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)  # the fixtures' own backbone, inputs and variants
_spec.loader.exec_module(make_fixtures)


# ----------------------------------------------------------------------------- artefacts of the previous version
@pytest.mark.parametrize("folder", sorted(make_fixtures.VARIANTS))
def test_previous_artefacts_load_and_compute_what_they_computed(folder, tmp_path):
    model, info = make_fixtures.backbone()
    model, applied, _ = load_adapter(FIXTURES / folder, model=model, info=info)
    reference = load_file(str(FIXTURES / "reference.safetensors"))
    got = make_fixtures.embeddings(model)
    for kind in ("image", "text"):
        torch.testing.assert_close(got[kind], reference[f"{folder}.{kind}"], rtol=0, atol=1e-5)
    written = json.loads((FIXTURES / folder / CONFIG_FILE).read_text())
    assert applied.options == written["options"]
    # saved again: the same adapter_config.json (apart from the writing version, and the weights' sha256 that
    # this version records and the previous one did not: docs/formats.md) and the same tensors
    save_adapter(tmp_path, model, applied, info)
    again = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert "files" not in written and set(again.pop("files")) == {"adapter_model.safetensors"}
    assert {**again, "mwa_version": None} == {**written, "mwa_version": None}
    before = load_file(str(FIXTURES / folder / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("folder", sorted(make_fixtures.VARIANTS))
def test_previous_run_options_validate_for_resume(folder):
    written = json.loads((FIXTURES / folder / CONFIG_FILE).read_text())
    cfg = config_from_run({"method": written["method"], "method_options": written["options"], "data_dir": "d"})
    assert cfg.method_options == written["options"]


def test_resolved_two_tower_and_blip2_options_validate():
    for layers in ({"vision": [0, 1, 2], "text": [0, 1]}, {"vision": [1], "qformer": [0, 1]}):
        options = {"layers": layers, "rank": 64, "scale": 0.1, "dropout": 0.1, "ae_width": 192,
                   "ae_zero_init": True, "train_heads": False, "train_logit_scale": True}
        assert registry.resolve_options("mwa", options) == options


# ----------------------------------------------------------------------------- validation before any model
def test_defaults_presets_and_order_of_the_recorded_options():
    assert registry.names() == ["mwa", "nke", "lora", "full-ft", "frozen"]
    assert list(registry.resolve_options("mwa", {"preset": "paper-code", "layers": "top-2"}).items()) == [
        ("layers", "top-2"), ("rank", 64), ("scale", 0.1), ("dropout", 0.1), ("ae_width", "ffn"),
        ("ae_zero_init", False), ("train_heads", False), ("train_logit_scale", True), ("preset", "paper-code")]
    assert registry.resolve_options("full-ft", None) == {} and registry.resolve_options("frozen", {}) == {}
    assert registry.display_name("full-ft") == "Full FT" and registry.display_name("someone-elses") == "someone-elses"


@pytest.mark.parametrize("method,options,message,hint", [
    ("mwa", {"rnk": 4}, "unknown options for method mwa: rnk", "accepted: ae_width, ae_zero_init, dropout, layers"),
    ("full-ft", {"rank": 4}, "unknown options for method full-ft: rank", "accepted: none"),
    ("mwa", {"rank": "big"}, "option rank of method mwa must be a whole number or 'auto', not 'big'",
     "--option rank=auto"),
    ("mwa", {"ae_zero_init": "no"}, "must be true or false, not 'no'", "--option ae_zero_init=true"),
    ("lora", {"targets": "q_proj"}, "must be a list of texts", "--option 'targets=[\"q_proj\",\"v_proj\"]'"),
    ("lora", {"targets": ["q_prj"]}, "unknown LoRA targets ['q_prj']", "q_proj, k_proj, v_proj, out_proj"),
    ("nke", {"layers": "top-x"}, "bad layer selection 'top-x'", "top-K"),
    ("nke", {"layers": {"vision": "last"}}, "bad layer selection 'last'", "top-K"),
    ("mwa", {"dropout": 1.5}, "option dropout of method mwa must be a number in [0, 1), not 1.5", "dropout=0.1"),
    ("mwa", {"scale": float("nan")}, "option scale of method mwa must be a finite number, not nan", "scale=0.1"),
    ("lora", {"alpha": float("inf")}, "option alpha of method lora must be a finite number, not inf", "alpha=16.0"),
    ("mwa", {"rank": 0}, "option rank of method mwa must be a whole number from 1 to 65536", "rank=auto"),
    ("nke", {"rank": 10**30}, "option rank of method nke must be a whole number from 1 to 65536", "rank=auto"),
    ("nke", {"preset": "paper-code"}, "unknown preset 'paper-code' for method nke", "nke has no presets"),
    ("mwa", "rank=4", "must be KEY=VALUE pairs", "--option rank=16"),
    ("adapterx", None, "unknown method 'adapterx'", "mwa, nke, lora, full-ft, frozen"),
])
def test_bad_options_are_refused_with_what_to_do(method, options, message, hint):
    with pytest.raises(ConfigError) as exc:
        TrainConfig(data_dir="d", method=method, method_options=options).validate()
    assert message in str(exc.value)
    assert hint is None or hint in exc.value.hint


# ----------------------------------------------------------------------------- learning rates
def test_recommended_rates_come_from_the_method_modules():
    lr = registry.recommended_lr
    assert [lr("beit3-mini", m) for m in ("full-ft", "mwa", "nke", "lora")] == [3e-3, 2e-2, 1e-2, 5e-3]
    assert [lr("beit3-base", m) for m in ("full-ft", "mwa", "nke", "lora")] == [2e-4, 1e-3, 1e-3, 1e-3]
    assert [lr("blip2-itm-vit-g", m) for m in ("full-ft", "mwa", "nke", "lora")] == [1e-5, 1e-3, 1e-3, 1e-3]
    with pytest.raises(ConfigError, match="unknown method 'adapterx'"):
        lr("beit3-base", "adapterx")
    for name in registry.names():  # a rate for a backbone that does not exist would never be used
        assert set(registry.get(name).learning_rates) - {"default"} <= set(preset_names()), name


# ----------------------------------------------------------------------------- registration
@dataclass
class _Opts(MethodConfig):
    layers: LayerSpec = "all"
    train_heads: bool = False
    train_logit_scale: bool = True


class _OnlyBeit3(AdapterMethod):
    name = "only-beit3"
    display_name = "Only BEiT-3"
    Config = _Opts
    learning_rates = {"default": 1e-3}

    def inject_beit3(self, model, config) -> None:
        raise AssertionError("not called in these tests")


def test_incomplete_or_clashing_methods_are_not_registered():
    bad = [type("Taken", (_OnlyBeit3,), {"name": "mwa"}),
           type("NoRate", (_OnlyBeit3,), {"learning_rates": {"beit3-mini": 1e-3}}),
           type("BadPreset", (_OnlyBeit3,), {"presets": {"p": {"rank": 4}}}),
           type("NoLayers", (_OnlyBeit3,), {"Config": MethodConfig})]
    for cls, why in zip(bad, ["is taken", 'no "default" rate', "unknown options ['rank']", "needs layers"]):
        with pytest.raises(ValueError, match=re.escape(why)):
            registry.register(cls())
    assert registry.names() == ["mwa", "nke", "lora", "full-ft", "frozen"]


def test_a_method_without_an_injection_for_the_family_is_refused_before_touching_the_model():
    registry.register(_OnlyBeit3())
    try:
        model = types.SimpleNamespace(two_tower=True)  # any two-tower model: refused before it is looked at
        with pytest.raises(ConfigError, match="only-beit3 is not available for two-tower") as exc:
            registry.apply_method(model, "only-beit3")
        assert exc.value.hint == "choose one of: mwa, nke, lora, full-ft, frozen"
    finally:
        registry.unregister("only-beit3")
