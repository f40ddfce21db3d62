"""The last layer computed for the [CLS] token only (encode_image / encode_text and their feature-cache forms):
the same embeddings and gradients as the whole last layer, for every method that changes the layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mwa_cli.adapters.registry import apply_method
from mwa_cli.models.beit3 import BEiT3Retrieval

CFG = {"img_size": 32, "patch_size": 8, "vocab_size": 300, "embed_dim": 32, "depth": 3, "num_heads": 2,
       "ffn_dim": 64, "text_len": 12, "drop_path": 0.2}
METHODS = {"full-ft": None, "mwa": {"dropout": 0.0}, "nke": {"dropout": 0.0}, "lora": {"dropout": 0.0},
           "frozen": None}


def _model(method: str) -> tuple[BEiT3Retrieval, object]:
    torch.manual_seed(0)
    model = BEiT3Retrieval.from_config(CFG)
    applied = apply_method(model, method, METHODS[method])
    with torch.no_grad():  # adapters start as the identity (zero up-projections): move them so they count
        for _, p in applied.trainable_named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, applied


def _inputs():
    g = torch.Generator().manual_seed(1)
    px = torch.randn(4, 3, 32, 32, generator=g)
    ids = torch.randint(4, 300, (4, 12), generator=g)
    mask = torch.zeros(4, 12, dtype=torch.long)
    mask[0, 5:] = 1
    mask[2, 9:] = 1
    ids = ids.masked_fill(mask.bool(), 1)
    return px, ids, mask


def _whole_last_layer(model, px, ids, mask):
    """The embeddings from the encoder's full output (every token through the last layer)."""
    img = model.beit3(visual_tokens=px)
    txt = model.beit3(textual_tokens=ids, text_padding_position=mask)
    return (F.normalize(model.vision_head(img[:, 0]), dim=-1), F.normalize(model.language_head(txt[:, 0]), dim=-1))


def _cls_only(model, px, ids, mask):
    return model.encode_image(px), model.encode_text(ids, mask)


@pytest.mark.parametrize("method", list(METHODS))
def test_embeddings_equal_the_whole_last_layer_at_evaluation(method):
    model, _ = _model(method)
    model.eval()
    px, ids, mask = _inputs()
    with torch.no_grad():
        for got, want in zip(_cls_only(model, px, ids, mask), _whole_last_layer(model, px, ids, mask)):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["full-ft", "mwa", "nke", "lora"])
def test_training_outputs_and_gradients_equal_the_whole_last_layer_with_drop_path(method):
    """Training mode, drop path on: the per-sample masks are drawn in the same order, so the outputs and the
    gradients of every trainable tensor are the whole layer's."""
    px, ids, mask = _inputs()
    results = []
    for forward in (_whole_last_layer, _cls_only):
        model, applied = _model(method)
        model.train()
        torch.manual_seed(7)
        img, txt = forward(model, px, ids, mask)
        (img @ txt.t()).logsumexp(1).sum().backward()
        grads = {n: p.grad.clone() for n, p in applied.trainable_named_parameters() if p.grad is not None}
        results.append((img.detach(), txt.detach(), grads))
    (img_w, txt_w, grads_w), (img_c, txt_c, grads_c) = results
    torch.testing.assert_close(img_c, img_w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(txt_c, txt_w, atol=1e-6, rtol=1e-5)
    assert set(grads_c) == set(grads_w) and any(".layers.2." in n for n in grads_w)
    for name, g in grads_w.items():
        torch.testing.assert_close(grads_c[name], g, atol=1e-6, rtol=1e-5, msg=name)


def test_feature_cache_forms_equal_the_whole_last_layer():
    model, _ = _model("mwa")
    model.eval()
    px, ids, mask = _inputs()
    with torch.no_grad():
        want_img, want_txt = _whole_last_layer(model, px, ids, mask)
        for k in (1, 2):
            torch.testing.assert_close(model.encode_image_hidden(model.image_hidden(px, k), k), want_img,
                                       atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(model.encode_text_hidden(model.text_hidden(ids, mask, k), mask, k), want_txt,
                                       atol=1e-6, rtol=1e-5)


def test_the_last_adapter_sees_the_first_token_only_and_the_others_every_token():
    model, _ = _model("mwa")
    seen = {}

    def record(i):
        def hook(_module, args, out):
            seen[i] = (args[0].shape, out.shape)
        return hook

    for i, layer in enumerate(model.layers):
        layer.mwa.register_forward_hook(record(i))
    px, _, _ = _inputs()
    with torch.no_grad():
        model.encode_image(px)
    assert seen[2] == (torch.Size([4, 1, 32]), torch.Size([4, 1, 32]))
    assert seen[0][0] == seen[1][0] == torch.Size([4, 17, 32])


def test_the_full_encoder_output_keeps_every_token():
    model, _ = _model("full-ft")
    px, ids, mask = _inputs()
    with torch.no_grad():
        assert model.beit3(visual_tokens=px).shape == (4, 17, 32)
        assert model.beit3(visual_tokens=px, first_token_only=True).shape == (4, 1, 32)
        assert model.beit3(textual_tokens=ids, text_padding_position=mask).shape == (4, 12, 32)
    assert not list(model.beit3.encoder.first_token.parameters())
    assert not any(".first_token." in k for k in model.state_dict())
