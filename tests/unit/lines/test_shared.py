"""One backbone for many lines: each version's adapter on a copy whose frozen tensors are the backbone's own.
The copies embed exactly as the run's own model does, share the frozen tensors (one backbone in memory), keep
their adapter tensors apart, and a version that trains the heads gets private heads."""

from __future__ import annotations

import pytest
import torch

from mwa_cli.adapters.io import save_adapter
from mwa_cli.adapters.registry import apply_method
from mwa_cli.lines.shared import SharedBackbones
from mwa_cli.models.presets import build_backbone
from mwa_cli.search.model import load_search_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXTS = ["a large scratch on the upper right of a brushed metal plate", "a hole in the centre of a wooden board"]


def test_line_models_embed_as_their_runs_and_share_only_the_frozen_tensors(sample):
    pool = SharedBackbones("cpu")
    a, b = pool.model_for(sample.good1), pool.model_for(sample.good2)
    for sm, run in ((a, sample.good1), (b, sample.good2)):
        own = load_search_model(run, device="cpu")  # the run's own model, built alone
        assert torch.allclose(sm.encode_texts(TEXTS), own.encode_texts(TEXTS), atol=1e-6)
        assert sm.identity == own.identity
    assert not torch.allclose(a.encode_texts(TEXTS), b.encode_texts(TEXTS), atol=1e-4)  # two adapters, two answers
    base = pool.base(*_key(sample.good1))[0]
    base_ptrs = {t.data_ptr() for t in [*base.parameters(), *base.buffers()]}
    params_a, params_b = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    frozen = [n for n, _ in base.named_parameters() if n != "logit_scale"]  # the temperature trains
    assert frozen and all(params_a[n].data_ptr() == params_b[n].data_ptr() in base_ptrs for n in frozen)
    added = sorted(set(params_a) - {n for n, _ in base.named_parameters()})
    assert added and all(params_a[n].data_ptr() != params_b[n].data_ptr() for n in added)
    assert not (set(base_ptrs) & {params_a[n].data_ptr() for n in added})
    assert pool.memory()["backbones"] == 1


def _key(run):
    from mwa_cli.adapters.io import read_adapter_config
    from mwa_cli.lines.runinfo import backbone_key
    from mwa_cli.runs import read_run_config

    _, cfg = read_adapter_config(run)
    return backbone_key(cfg, read_run_config(run)), "beit3-mini", None, None


def test_an_adapter_that_trains_the_heads_gets_its_own_heads(sample, tmp_path):
    torch.manual_seed(0)
    model, info = build_backbone("beit3-mini")
    applied = apply_method(model, "mwa", {"train_heads": True})
    with torch.no_grad():
        model.vision_head.weight.add_(torch.randn(model.vision_head.weight.shape) * 0.5)
    trained_head = model.vision_head.weight.detach().clone()
    save_adapter(tmp_path / "heads", model, applied, info)
    pool = SharedBackbones("cpu")
    plain = pool.model_for(sample.good1)
    heads = pool.model_for(tmp_path / "heads")
    base = pool.base(*_key(sample.good1))[0]
    pristine, _ = build_backbone("beit3-mini")
    assert torch.equal(base.vision_head.weight, pristine.vision_head.weight)  # the shared head is untouched
    assert torch.equal(plain.model.vision_head.weight, pristine.vision_head.weight)
    assert plain.model.vision_head.weight.data_ptr() == base.vision_head.weight.data_ptr()
    assert torch.equal(heads.model.vision_head.weight, trained_head)
    assert heads.model.vision_head.weight.data_ptr() != base.vision_head.weight.data_ptr()
