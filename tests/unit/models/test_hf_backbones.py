"""Hugging Face two-tower backbones (`--backbone hf:DIR`, CLIP and SigLIP) with the methods on both towers.

Tiny randomly initialised CLIP / SigLIP models and a word-level tokenizer are written to a temporary directory
with `save_pretrained` (nothing is downloaded). CLIP's tiny towers differ in width (32 / 24) and depth (2 / 3),
so the shared-core AE and the proportional layer pairing are exercised; SigLIP's have the same width.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from mwa_cli.adapters.io import load_adapter, save_adapter  # noqa: E402
from mwa_cli.adapters.modules.alignment import SharedCoreAE  # noqa: E402
from mwa_cli.adapters.two_tower import pair_layers  # noqa: E402
from mwa_cli.models.hf import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, HFTokenizer  # noqa: E402
from mwa_cli.models.presets import build_backbone  # noqa: E402
from mwa_cli.models.run_tokenizer import load_tokenizer  # noqa: E402
from mwa_cli.train.loss import contrastive_loss, model_loss, sigmoid_loss  # noqa: E402
from tests.helpers.data_dir import make_train_data_dir as train_make_data_dir  # noqa: E402
from tests.helpers.hf_test_models import build_hf, hf_inputs  # noqa: E402

METHODS = ["mwa", "nke", "lora", "full-ft", "frozen"]
KINDS = ["clip", "siglip"]
WORDS = ("a red green blue yellow white black scratch dent stain crack on steel plate number mark the left right "
         "of").split() + [str(i) for i in range(30)]


def _tokenizer(kind: str):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    single = "<s> $A </s>" if kind == "clip" else "$A </s>"  # CLIP: BOS ... EOS; SigLIP: ... EOS
    specials = [("<s>", 2), ("</s>", 3)] if kind == "clip" else [("</s>", 3)]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=16)


def make_tiny_hf(root: Path, kind: str) -> Path:
    """A tiny random CLIP or SigLIP model directory (config, weights, tokenizer[, preprocessor config])."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    out = Path(root) / kind
    if kind == "siglip2":  # NaFlex: 16 patches of 8 px -> a fixed 32 x 32 grid
        from transformers import Siglip2Config, Siglip2Model

        torch.manual_seed(0)
        v = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_patches=16,
                 patch_size=8)
        t = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=16, projection_size=32, pad_token_id=0, eos_token_id=3)
        Siglip2Model(Siglip2Config(vision_config=v, text_config=t)).save_pretrained(out)
        _tokenizer("siglip").save_pretrained(out)
        return out
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    text = dict(vocab_size=64, hidden_size=24, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    if kind == "clip":
        model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
    else:
        text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, projection_size=32)
        model = SiglipModel(SiglipConfig(vision_config=vision, text_config=text))
        with torch.no_grad():
            model.logit_bias.fill_(-2.0)
    model.save_pretrained(out)
    _tokenizer(kind).save_pretrained(out)
    if kind == "clip":
        (out / "preprocessor_config.json").write_text(json.dumps(
            {"image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD)}))
    return out


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_models")
    return {kind: make_tiny_hf(root, kind) for kind in KINDS}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ backbone + tokenizer
def test_backbone_interface_and_normalisation(hf_dirs):
    model, _, info = build_hf(hf_dirs["clip"])
    cfg = model.config
    assert (cfg.img_size, cfg.text_len, cfg.depth, cfg.vision_depth, cfg.text_depth) == (32, 16, 3, 2, 3)
    assert info.name == f"hf:{hf_dirs['clip'].resolve()}" and info.weights_sha256 and cfg.config_sha256
    assert model.loss_kind == "softmax" and model.logit_bias is None
    tok = load_tokenizer(info.tokenizer_path, cfg.text_len)
    assert isinstance(tok, HFTokenizer)
    ids, mask = tok.encode_batch(["a red scratch", "zzz"])
    assert ids.shape == mask.shape == (2, 16)
    assert ids[0, :5].tolist() == [2, 4, 5, 11, 3] and mask[0].tolist() == [0] * 5 + [1] * 11
    assert ids[1, 1].item() == 1  # unknown word -> <unk>
    # project pixels (mean = std = 0.5) are converted to CLIP's statistics inside encode_image
    model.eval()
    x01 = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model.encode_image((x01 - 0.5) / 0.5)
        ref = model.hf.get_image_features(pixel_values=(x01 - mean) / std).pooler_output
        txt = model.encode_text(ids, mask)
        ref_txt = model.hf.get_text_features(input_ids=ids, attention_mask=1 - mask).pooler_output
    torch.testing.assert_close(ours, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt, torch.nn.functional.normalize(ref_txt, dim=-1), atol=1e-6, rtol=1e-6)
    sig, _, _ = build_hf(hf_dirs["siglip"])
    assert sig.loss_kind == "sigmoid" and sig.logit_bias is not None and not sig._renormalise


@pytest.mark.parametrize("kind", KINDS)
def test_bucketed_captions_give_clip_the_fixed_length_embeddings_and_siglip_keeps_its_length(hf_dirs, kind):
    """CLIP masks its padding: the evaluation cuts each batch to its bucket length (8 of 16 here) and the
    embeddings are the fixed-length ones; SigLIP reads its last position, so its captions keep their length."""
    from mwa_cli.eval.embed import embed_texts
    from mwa_cli.models.text_pad import padding_is_free

    model, _, info = build_hf(hf_dirs[kind], "mwa")
    model.eval()
    tok = load_tokenizer(info.tokenizer_path, model.config.text_len)
    ids, mask = tok.encode_batch(["a red scratch", "blue dent mark 7", "a white crack"])  # 5-6 tokens
    widths = []
    encode = model.encode_text

    def spy(i, m):
        widths.append(i.shape[1])
        return encode(i, m)

    model.encode_text = spy
    with torch.no_grad():
        fixed = encode(ids, mask)
    got = embed_texts(model, ids, mask, device=torch.device("cpu"))
    assert padding_is_free(model) == (kind == "clip")
    assert widths == ([8] if kind == "clip" else [16])
    torch.testing.assert_close(got, fixed, atol=1e-6, rtol=1e-5)


def test_layer_pairing():
    assert pair_layers(12, 12) == [(i, i) for i in range(12)]
    assert pair_layers(12, 6) == [(2 * j + 1, j) for j in range(6)]  # aligned at the top
    assert pair_layers(2, 3) == [(0, 1), (1, 2)]


# ------------------------------------------------------------------ methods
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_step0_equivalence(hf_dirs, kind, method):
    base, _, info = build_hf(hf_dirs[kind])
    model, applied, _ = build_hf(hf_dirs[kind], method)
    px, ids, mask = hf_inputs(base, info)
    base.eval()
    model.eval()
    with torch.no_grad():
        d_img = (model.encode_image(px) - base.encode_image(px)).abs().max().item()
        d_txt = (model.encode_text(ids, mask) - base.encode_text(ids, mask)).abs().max().item()
    assert d_img <= 1e-6 and d_txt <= 1e-6, (d_img, d_txt)
    if method in ("mwa", "nke", "lora"):
        assert set(applied.layers) == {"vision", "text"}
        assert applied.added_params() > 0 and applied.trainable_params() == applied.added_params() + (
            2 if kind == "siglip" else 1)  # + logit scale (and SigLIP's bias)
    if method == "mwa":
        aes = list(model.mwa_ae.values())
        assert len(aes) == 2  # CLIP: min(2, 3) pairs; SigLIP: 2 layers
        assert all(isinstance(ae, SharedCoreAE) for ae in aes) == (kind == "clip")


@pytest.mark.parametrize("kind,method", [("clip", "mwa"), ("siglip", "mwa"), ("clip", "lora")])
def test_freezing_only_trainables_change(hf_dirs, kind, method):
    from mwa_cli.train.trainer import Trainer

    model, applied, info = build_hf(hf_dirs[kind], method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in applied.trainable_named_parameters()}
    assert "hf.logit_scale" in trainable and (kind != "siglip" or "hf.logit_bias" in trainable)
    assert not any(n.startswith("hf.") and ".mwa." not in n and ".lora." not in n
                   for n in trainable - {"hf.logit_scale", "hf.logit_bias"})
    px, ids, mask = hf_inputs(model, info)
    model_loss(model, model.encode_image(px), model.encode_text(ids, mask)).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads <= trainable and "hf.logit_scale" in grads
    model.zero_grad(set_to_none=True)
    trainer = Trainer(model, applied, lr=1e-2, warmup_frac=0.0, layer_decay=0.65)
    for _ in range(2):
        trainer.step({"pixels": px, "input_ids": ids, "padding_mask": mask})
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed <= trainable and changed  # every change is a trainable, and something changed
    up = [n for n in changed if n.endswith(".up.weight") or n.endswith("lora_B.weight")]
    assert up, "the zero-initialised output projections must move"


def test_layer_decay_follows_each_tower(hf_dirs):
    model, applied, _ = build_hf(hf_dirs["clip"], "full-ft")
    groups = applied.param_groups(lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    # vision depth 2: layer 0 -> 0.5 ** 2; text depth 3: layer 0 -> 0.5 ** 3; embeddings one more; heads 1
    assert scale["hf.vision_model.encoder.layers.0.mlp.fc1.weight"] == 0.25
    assert scale["hf.text_model.encoder.layers.0.mlp.fc1.weight"] == 0.125
    assert scale["hf.vision_model.embeddings.patch_embedding.weight"] == 0.125
    assert scale["hf.text_model.embeddings.token_embedding.weight"] == 0.0625
    assert scale["hf.logit_scale"] == scale["hf.visual_projection.weight"] == 1.0
    nd = {n for g in groups if g["weight_decay"] == 0.0 for n in g["names"]}
    assert "hf.logit_scale" in nd and "hf.vision_model.embeddings.class_embedding" in nd


def test_losses_match_transformers(hf_dirs):
    for kind in KINDS:
        model, _, info = build_hf(hf_dirs[kind])
        px, ids, mask = hf_inputs(model, info)
        model.eval()
        with torch.no_grad():
            ours = model_loss(model, model.encode_image(px), model.encode_text(ids, mask))
            kw = {"attention_mask": 1 - mask} if kind == "clip" else {}
            ref = model.hf(input_ids=ids, pixel_values=model.model_pixels(px), return_loss=True, **kw).loss
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    img = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    assert not torch.equal(sigmoid_loss(img, img, torch.tensor(1.0), torch.tensor(0.0)),
                           contrastive_loss(img, img, torch.tensor(1.0)))


# ------------------------------------------------------------------ artefacts
@pytest.mark.parametrize("kind,method,options", [("clip", "mwa", None), ("siglip", "mwa", {"layers": "top-1"}),
                                                 ("siglip", "lora", None), ("clip", "full-ft", None)])
def test_artefact_round_trip_bit_exact(hf_dirs, tmp_path, kind, method, options):
    model, applied, info = build_hf(hf_dirs[kind], method, options)
    with torch.no_grad():  # move every trainable away from its init so the round trip is meaningful
        for _, p in applied.trainable_named_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_adapter(tmp_path, model, applied, info)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["backbone"]["name"] == info.name and cfg["backbone"]["config"]["config_sha256"]
    assert cfg["backbone"]["weights_sha256"] == info.weights_sha256
    torch.manual_seed(123)  # a different init of the new modules: the load must overwrite all of them
    loaded, applied2, _ = load_adapter(tmp_path)
    ours = dict(applied.trainable_named_parameters())
    theirs = dict(applied2.trainable_named_parameters())
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[n].detach(), theirs[n].detach()) for n in ours)
    assert applied2.layers == applied.layers and applied2.options == applied.options
    px, ids, mask = hf_inputs(model, info, 2)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(px), loaded.encode_image(px))
        assert torch.equal(model.encode_text(ids, mask), loaded.encode_text(ids, mask))


def test_adapter_refuses_another_backbone(hf_dirs, tmp_path):
    from mwa_cli.errors import CheckpointError

    model, applied, info = build_hf(hf_dirs["siglip"], "nke")
    save_adapter(tmp_path, model, applied, info)
    other, other_info = build_backbone(f"hf:{hf_dirs['clip']}")
    with pytest.raises(CheckpointError):
        load_adapter(tmp_path, model=other, info=other_info)


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("kind", KINDS)
def test_overfit_batch_loss_decreases(hf_dirs, kind):
    from mwa_cli.train.trainer import Trainer

    model, applied, info = build_hf(hf_dirs[kind], "mwa")
    px, ids, mask = hf_inputs(model, info)
    batch = {"pixels": px, "input_ids": ids, "padding_mask": mask}
    trainer = Trainer(model, applied, lr=3e-3, warmup_frac=0.0, layer_decay=0.65)
    trainer.schedule.fit(30)
    losses = [float(trainer.step(batch)) for _ in range(30)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 0.8 * (len(losses) - 1), losses


@pytest.mark.parametrize("kind", KINDS)
def test_train_run_end_to_end(hf_dirs, tmp_path, kind):
    from mwa_cli.eval.evaluate import evaluate_path
    from mwa_cli.train.config import TrainConfig
    from mwa_cli.train.loop import train

    data = train_make_data_dir(tmp_path / "data", n_images=16)
    cfg = TrainConfig(data_dir=str(data), backbone=f"hf:{hf_dirs[kind]}", method="mwa", steps=6, batch_size=8,
                      lr=2e-3, seed=0, log_every=1, val_evals=1, workers=0, out=str(tmp_path / "runs"), name=kind,
                      device="cpu", precision="fp32")
    res = train(cfg)
    assert res.status == "completed" and res.steps == 6, res.message
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert losses and all(math.isfinite(x) for x in losses)
    adapter_cfg = json.loads((res.run_dir / "adapter_config.json").read_text())
    assert adapter_cfg["backbone"]["name"].startswith("hf:") and adapter_cfg["method"] == "mwa"
    result = evaluate_path(res.run_dir, write=False, device="cpu", precision="fp32")
    assert result["rsum"] == pytest.approx(res.eval["rsum"])


def test_siglip2_naflex_patches_and_training(tmp_path):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Siglip2Model"):
        pytest.skip("this transformers has no Siglip2Model")
    from mwa_cli.train.trainer import Trainer

    dirs = {"siglip2": make_tiny_hf(tmp_path, "siglip2")}
    base, _, info = build_hf(dirs["siglip2"])
    assert base.config.img_size == 32 and base.loss_kind == "sigmoid"
    px, ids, mask = hf_inputs(base, info)
    base.eval()
    with torch.no_grad():
        ours = base.encode_image(px)
        # the image processor's convert_image_to_patches: (C, nh, p, nw, p) -> (nh, nw, p, p, C)
        patches = torch.stack([x.reshape(3, 4, 8, 4, 8).permute(1, 3, 2, 4, 0).reshape(16, -1) for x in px])
        ref = base.hf.get_image_features(pixel_values=patches, pixel_attention_mask=torch.ones(4, 16, dtype=torch.long),
                                         spatial_shapes=torch.tensor([[4, 4]] * 4)).pooler_output
        torch.testing.assert_close(ours, torch.nn.functional.normalize(ref, dim=-1), atol=1e-6, rtol=1e-6)
        txt = base.encode_text(ids, mask)
    model, applied, _ = build_hf(dirs["siglip2"], "mwa")
    model.eval()
    with torch.no_grad():
        assert (model.encode_image(px) - ours).abs().max() <= 1e-6
        assert (model.encode_text(ids, mask) - txt).abs().max() <= 1e-6
    model.train()
    trainer = Trainer(model, applied, lr=3e-3, warmup_frac=0.0)
    trainer.schedule.fit(10)
    losses = [float(trainer.step({"pixels": px, "input_ids": ids, "padding_mask": mask})) for _ in range(10)]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
