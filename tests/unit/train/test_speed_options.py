"""Speed options of the trainer that must not change results: bf16 frozen weights, regional compile."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from mwa_cli.models.beit3 import BEiT3Retrieval
from mwa_cli.train.trainer import build_trainer


def test_frozen_weights_kept_in_bf16_give_the_same_outputs_as_autocast():
    trainer = build_trainer("beit3-tiny-test", "mwa", device="cpu", precision="fp32", drop_path=0.0)
    model = trainer.model.eval()
    reference = copy.deepcopy(model)
    changed = model.store_frozen_in(torch.bfloat16)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert changed > 0
    assert all(m.weight.dtype == (torch.float32 if m.weight.requires_grad else torch.bfloat16) for m in linears)
    kept = [p for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.Embedding))
            for p in m.parameters()]
    assert kept and all(p.dtype == torch.float32 for p in kept)
    batch = trainer.random_batch(4, text_len=12, augment=False)
    px = trainer.pixels(batch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model.encode_image(px), reference.encode_image(px))
        ids, mask = batch["input_ids"], batch["padding_mask"]
        assert torch.equal(model.encode_text(ids, mask), reference.encode_text(ids, mask))


def test_trainer_keeps_frozen_weights_in_its_autocast_dtype_only():
    bf16 = build_trainer("beit3-tiny-test", "mwa", device="cpu", precision="bf16")
    assert any(p.dtype == torch.bfloat16 for p in bf16.model.parameters())
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters() if p.requires_grad)
    fp32 = build_trainer("beit3-tiny-test", "mwa", device="cpu", precision="fp32")
    assert all(p.dtype == torch.float32 for p in fp32.model.parameters())
    full = build_trainer("beit3-tiny-test", "full-ft", device="cpu", precision="bf16")
    assert all(p.dtype == torch.float32 for p in full.model.parameters())


@pytest.mark.slow
def test_regional_compile_traces_each_layer_once_per_variant_without_graph_breaks():
    """Six layers with six different drop-path rates, adapters in the top three: the compiled layer is reused
    (rates are tensors, the adapter is plain code), so the graphs are a handful, not one per layer."""
    torch._dynamo.reset()
    counters.clear()
    cfg = {"img_size": 32, "patch_size": 8, "vocab_size": 300, "embed_dim": 32, "depth": 6, "num_heads": 2,
           "ffn_dim": 64, "text_len": 12}
    trainer = build_trainer(cfg, "mwa", method_options={"layers": "top-3"}, device="cpu", precision="fp32",
                            drop_path=0.2)
    rates = {float(layer.drop_path.rate) for layer in trainer.model.layers}
    assert len(rates) == 6
    trainer.model.compile_layers(backend="aot_eager")
    batch = trainer.random_batch(4, text_len=12)
    for _ in range(3):
        loss = trainer.step(batch)
    assert torch.isfinite(loss)
    assert not counters["graph_break"], dict(counters["graph_break"])
    # image/text x with/without autograd (frozen prefix) x with/without adapter: at most 8, never one per layer;
    # + the last layer for [CLS] only, image and text
    assert 0 < counters["stats"]["unique_graphs"] <= 10, dict(counters["stats"])
    torch._dynamo.reset()


def test_layers_run_from_cached_hidden_states_match_the_full_forward():
    model = BEiT3Retrieval.from_config({"img_size": 32, "patch_size": 8, "vocab_size": 300, "embed_dim": 32,
                                        "depth": 4, "num_heads": 2, "ffn_dim": 64}).eval()
    px = torch.randn(3, 3, 32, 32)
    ids = torch.randint(4, 300, (3, 10))
    mask = torch.zeros(3, 10, dtype=torch.long)
    mask[0, 6:] = 1
    with torch.no_grad():
        for k in (1, 2, 4):
            torch.testing.assert_close(model.encode_image_hidden(model.image_hidden(px, k), k), model.encode_image(px))
            torch.testing.assert_close(model.encode_text_hidden(model.text_hidden(ids, mask, k), mask, k),
                                       model.encode_text(ids, mask))
