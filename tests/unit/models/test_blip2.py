"""BLIP-2 retrieval as a backbone (`--backbone hf:DIR` / `blip2-itm-vit-g`): the ITC path, every method, artefacts,
training, `mwa eval` / `index` / `search` / `report`.

A tiny randomly initialised `Blip2ForImageTextRetrieval` and a WordPiece tokenizer built from a small vocabulary
are written to a temporary directory with `save_pretrained` (nothing is downloaded). The Q-Former has a layer
with cross-attention and one without; its query tokens are randomised so that the max over query tokens matters.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

from mwa_cli.adapters.io import load_adapter, save_adapter  # noqa: E402
from mwa_cli.adapters.methods.mwa import PARAM_BUDGET  # noqa: E402
from mwa_cli.adapters.modules.layer_adapters import QFormerLayerAdapter  # noqa: E402
from mwa_cli.adapters.modules.lora import FusedQKVLoRA  # noqa: E402
from mwa_cli.adapters.registry import apply_method  # noqa: E402
from mwa_cli.errors import ConfigError  # noqa: E402
from mwa_cli.eval.metrics import retrieval_ranks  # noqa: E402
from mwa_cli.models.hf import HFTokenizer  # noqa: E402
from mwa_cli.models.presets import build_backbone  # noqa: E402
from mwa_cli.models.run_tokenizer import load_tokenizer  # noqa: E402
from mwa_cli.similarity import paired_similarity, similarity  # noqa: E402
from mwa_cli.train.loss import contrastive_loss, model_loss  # noqa: E402
from tests.helpers.data_dir import make_train_data_dir as train_make_data_dir  # noqa: E402
from tests.helpers.hf_test_models import build_hf, hf_inputs  # noqa: E402

METHODS = ["mwa", "nke", "lora", "full-ft", "frozen"]
WORDS = ("a red green blue yellow white black scratch dent stain crack on steel plate number mark the left right of "
         "circle square triangle cross 左 に の").split() + [str(i) for i in range(30)]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tokenizer():
    from transformers import BertTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=32)


def tiny_config(**overrides):
    from transformers import Blip2Config

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8, qkv_bias=True)
    qformer = dict(vocab_size=len(WORDS) + 5, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=48, max_position_embeddings=32, cross_attention_frequency=2,
                   encoder_hidden_size=32, use_qformer_text_input=True, pad_token_id=0)
    qformer.update(overrides.pop("qformer", {}))
    cfg = Blip2Config(vision_config=vision, qformer_config=qformer, num_query_tokens=4, image_text_hidden_size=16,
                      **overrides)
    cfg.architectures = ["Blip2ForImageTextRetrieval"]
    return cfg


def make_tiny_blip2(root: Path) -> Path:
    """A tiny random BLIP-2 retrieval model directory (config, weights, tokenizer)."""
    from transformers import Blip2ForImageTextRetrieval

    out = Path(root) / "blip2"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = Blip2ForImageTextRetrieval(tiny_config())
    with torch.no_grad():  # BLIP-2 initialises the queries to zero: make them differ so the max is exercised
        model.query_tokens.normal_(0, 1.0)
    model.save_pretrained(out)
    _tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory) -> Path:
    return make_tiny_blip2(tmp_path_factory.mktemp("blip2_model"))


# ------------------------------------------------------------------ similarity of multi-vector embeddings
def test_similarity_max_over_query_tokens():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(5, 3, 8, generator=g), torch.randn(4, 8, generator=g)
    brute = torch.tensor([[max(float(img[i, q] @ txt[j]) for q in range(3)) for j in range(4)] for i in range(5)])
    torch.testing.assert_close(similarity(img, txt), brute)
    torch.testing.assert_close(similarity(txt, img), brute.t())  # a multi-vector query against single vectors
    torch.testing.assert_close(paired_similarity(img[:4], txt), brute[:4].diagonal())
    flat = torch.randn(5, 8, generator=g)
    torch.testing.assert_close(similarity(flat, txt), flat @ txt.t())
    with pytest.raises(ValueError, match=r"\[N, Q, d\]"):
        similarity(torch.randn(2, 2, 2, 8), txt)


def test_metrics_and_loss_on_multi_vector_images():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 3, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(9, 8, generator=g), dim=-1)
    t2i = torch.tensor([0, 0, 1, 2, 3, 4, 5, 5, 1])
    scores = similarity(img, txt)
    ranks = retrieval_ranks(img, txt, t2i, chunk_size=4)  # several image and caption blocks
    for j in range(9):  # text -> image: 1 + images scoring strictly higher than the caption's own
        assert ranks["t2i_ranks"][j] == 1 + int((scores[:, j] > scores[t2i[j], j]).sum())
    for i in range(6):
        own = scores[i, t2i == i].max()
        assert ranks["i2t_ranks"][i] == 1 + int(((scores[i] > own) & (t2i != i)).sum())
    scale = torch.tensor(math.log(10.0))
    labels = torch.arange(6)
    want = 0.5 * (torch.nn.functional.cross_entropy(10 * scores[:, :6], labels)
                  + torch.nn.functional.cross_entropy(10 * scores[:, :6].t(), labels))
    torch.testing.assert_close(contrastive_loss(img, txt[:6], scale), want)


# ------------------------------------------------------------------ backbone: equal to transformers' own output
def test_zero_shot_equals_transformers(blip2_dir):
    model, _, info = build_hf(blip2_dir)
    cfg = model.config
    assert (cfg.img_size, cfg.text_len, cfg.vision_depth, cfg.qformer_depth, cfg.num_query_tokens) == (32, 32, 2, 2, 4)
    assert info.name == f"hf:{blip2_dir.resolve()}" and info.weights_sha256 and cfg.config_sha256
    assert model.loss_kind == "softmax" and model.logit_bias is None
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    tok = load_tokenizer(info.tokenizer_path, cfg.text_len)
    assert isinstance(tok, HFTokenizer)
    px, ids, mask = hf_inputs(model, info)
    assert ids[0, 0].item() == 2 and (ids == 1).sum() == 0  # [CLS] first; every caption word is known
    model.eval()
    with torch.no_grad():
        img, txt = model.encode_image(px), model.encode_text(ids, mask)
        ref = model.hf(pixel_values=model.model_pixels(px), input_ids=ids, attention_mask=1 - mask,
                       use_image_text_matching_head=False)
    assert img.shape == (4, 4, 16) and txt.shape == (4, 16)
    torch.testing.assert_close(img, ref.image_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(txt, ref.text_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(similarity(img, txt), ref.logits_per_image, atol=1e-5, rtol=0)
    per_query = torch.einsum("iqd,td->iqt", img, txt)
    assert (per_query.argmax(1) != 0).any()  # the best query token is not always the first: the max matters
    # the project's pixels are converted to BLIP-2's (OpenAI CLIP) statistics inside encode_image
    x01 = (px + 1) / 2
    mean, std = torch.tensor(model.image_mean).view(1, 3, 1, 1), torch.tensor(model.image_std).view(1, 3, 1, 1)
    torch.testing.assert_close(model.model_pixels(px), (x01 - mean) / std, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ methods
@pytest.mark.parametrize("method", METHODS)
def test_step0_equivalence_and_what_trains(blip2_dir, method):
    base, _, info = build_hf(blip2_dir)
    model, applied, _ = build_hf(blip2_dir, method)
    px, ids, mask = hf_inputs(base, info)
    base.eval()
    model.eval()
    with torch.no_grad():
        d_img = (model.encode_image(px) - base.encode_image(px)).abs().max().item()
        d_txt = (model.encode_text(ids, mask) - base.encode_text(ids, mask)).abs().max().item()
    assert d_img <= 1e-6 and d_txt <= 1e-6, (d_img, d_txt)
    if method in ("mwa", "nke", "lora"):
        assert applied.layers == {"vision": [0, 1], "qformer": [0, 1]}
        assert applied.trainable_params() == applied.added_params() + 1  # + logit_scale
    if method in ("mwa", "nke"):
        adapters = [layer.mwa for layer in model.hf.qformer.encoder.layer]
        assert all(isinstance(a, QFormerLayerAdapter) for a in adapters)
        assert all((a.ae is not None) == (method == "mwa") for a in adapters)
        assert all(hasattr(layer, "mwa") for layer in model.hf.vision_model.encoder.layers)
    if method == "lora":
        assert isinstance(model.hf.vision_model.encoder.layers[0].self_attn.qkv.lora, FusedQKVLoRA)
    if method == "full-ft":
        assert applied.trainable_params() == applied.total_params()
    if method == "frozen":
        assert applied.trainable_params() == 0


def test_default_mwa_within_budget_on_the_real_layout():
    model, info = build_backbone("blip2-itm-vit-g", device="meta")
    assert info.name == "blip2-itm-vit-g"
    cfg = model.config
    assert (cfg.vision_depth, cfg.vision_width, cfg.qformer_depth, cfg.num_query_tokens, cfg.embed_dim) == \
        (39, 1408, 12, 32, 256)
    backbone = sum(p.numel() for p in model.parameters())
    applied = apply_method(model, "mwa")
    assert applied.added_params() <= PARAM_BUDGET * backbone
    assert applied.options["rank"] == 64 and applied.options["ae_width"] >= 16


@pytest.mark.parametrize("method", ["mwa", "lora"])
def test_freezing_only_trainables_change(blip2_dir, method):
    from mwa_cli.train.trainer import Trainer

    model, applied, info = build_hf(blip2_dir, method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, _ in applied.trainable_named_parameters()}
    assert "logit_scale" in trainable
    assert all(".mwa." in n or ".lora." in n for n in trainable - {"logit_scale"})
    px, ids, mask = hf_inputs(model, info)
    model_loss(model, model.encode_image(px), model.encode_text(ids, mask)).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads <= trainable and "logit_scale" in grads
    if method == "mwa":  # both Q-Former streams and the shared AE receive gradient
        names = " ".join(grads)
        assert all(k in names for k in ("nke_query.down", "nke_text.down", "mwa.ae.fc1", "layers.0.mwa.nke"))
    model.zero_grad(set_to_none=True)
    trainer = Trainer(model, applied, lr=1e-2, warmup_frac=0.0, layer_decay=0.65)
    for _ in range(2):
        trainer.step({"pixels": px, "input_ids": ids, "padding_mask": mask})
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= trainable
    assert [n for n in changed if n.endswith(".up.weight") or n.endswith("lora_B.weight")]


def test_layer_decay_over_the_vit_only(blip2_dir):
    _, applied, _ = build_hf(blip2_dir, "full-ft")
    groups = applied.param_groups(lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert scale["hf.vision_model.encoder.layers.0.mlp.fc1.weight"] == 0.25  # ViT depth 2
    assert scale["hf.vision_model.encoder.layers.1.mlp.fc1.weight"] == 0.5
    assert scale["hf.vision_model.embeddings.patch_embedding.weight"] == 0.125
    assert scale["hf.qformer.encoder.layer.0.intermediate_query.dense.weight"] == 1.0
    assert scale["hf.query_tokens"] == scale["logit_scale"] == scale["hf.text_projection.weight"] == 1.0
    nd = {n for g in groups if g["weight_decay"] == 0.0 for n in g["names"]}
    assert {"logit_scale", "hf.query_tokens", "hf.vision_model.embeddings.class_embedding"} <= nd
    assert applied.lowest_trainable_layer == 0
    _, top, _ = build_hf(blip2_dir, "mwa", {"layers": {"vision": "top-1", "qformer": "all"}})
    assert top.lowest_trainable_layer == 1 and top.layers == {"vision": [1], "qformer": [0, 1]}


# ------------------------------------------------------------------ artefacts
@pytest.mark.parametrize("method,options", [("mwa", None), ("nke", {"layers": "top-1"}), ("lora", None),
                                            ("full-ft", None)])
def test_artefact_round_trip_bit_exact(blip2_dir, tmp_path, method, options):
    model, applied, info = build_hf(blip2_dir, method, options)
    with torch.no_grad():  # move every trainable away from its init so the round trip is meaningful
        for _, p in applied.trainable_named_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_adapter(tmp_path, model, applied, info)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["backbone"]["config"]["model_type"] == "blip-2" and cfg["backbone"]["config"]["num_query_tokens"] == 4
    torch.manual_seed(123)  # a different init of the new modules: the load must overwrite all of them
    loaded, applied2, _ = load_adapter(tmp_path)
    ours, theirs = dict(applied.trainable_named_parameters()), dict(applied2.trainable_named_parameters())
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[n].detach(), theirs[n].detach()) for n in ours)
    assert applied2.layers == applied.layers and applied2.options == applied.options
    px, ids, mask = hf_inputs(model, info, 2)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(px), loaded.encode_image(px))
        assert torch.equal(model.encode_text(ids, mask), loaded.encode_text(ids, mask))


# ------------------------------------------------------------------ bad inputs: clear errors
def test_not_a_retrieval_checkpoint_is_refused(tmp_path):
    cfg = tiny_config()
    cfg.architectures = ["Blip2ForConditionalGeneration"]
    cfg.save_pretrained(tmp_path / "captioner")
    with pytest.raises(ConfigError, match="not an image-text retrieval model") as exc:
        build_backbone(f"hf:{tmp_path / 'captioner'}")
    assert "blip2-itm-vit-g" in exc.value.hint
    no_text = tiny_config(qformer={"use_qformer_text_input": False})
    no_text.save_pretrained(tmp_path / "no_text")
    with pytest.raises(ConfigError, match="no Q-Former text stream"):
        build_backbone(f"hf:{tmp_path / 'no_text'}")


def test_checkpoint_missing_weights_is_refused(blip2_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(blip2_dir, broken)
    state = load_file(str(broken / "model.safetensors"))
    kept = {k: v for k, v in state.items() if not k.startswith("text_projection")}
    save_file(kept, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"lacks 2 weights .*text_projection"):
        build_backbone(f"hf:{broken}")
    build_backbone(f"hf:{blip2_dir}")  # the intact directory still loads


def test_preset_needs_the_official_layout(blip2_dir, tmp_path):
    with pytest.raises(ConfigError, match="not the blip2-itm-vit-g layout: .*vision_depth 2 \\(expected 39\\)"):
        build_backbone("blip2-itm-vit-g", weights=str(blip2_dir))
    weights_file = tmp_path / "model.safetensors"
    weights_file.write_bytes(b"")
    with pytest.raises(ConfigError, match="must be the model directory") as exc:
        build_backbone("blip2-itm-vit-g", weights=str(weights_file))
    assert "--weights DIR" in exc.value.hint


def test_feature_cache_refused_before_the_run_starts(blip2_dir, tmp_path):
    from mwa_cli.train.config import TrainConfig
    from mwa_cli.train.loop import train

    data = train_make_data_dir(tmp_path / "data", n_images=12)
    cfg = TrainConfig(data_dir=str(data), backbone=f"hf:{blip2_dir}", method="mwa", steps=2, batch_size=4,
                      workers=0, out=str(tmp_path / "runs"), name="cached", device="cpu", precision="fp32",
                      feature_cache="auto", method_options={"layers": "top-1"})
    with pytest.raises(ConfigError, match="--feature-cache works with BEiT-3 backbones only") as exc:
        train(cfg)
    assert "without --feature-cache" in exc.value.hint
    assert not (tmp_path / "runs" / "cached").exists()


# ------------------------------------------------------------------ training, eval, index, search, report
@pytest.mark.slow
def test_train_eval_index_search_report(blip2_dir, tmp_path):
    from typer.testing import CliRunner

    from mwa_cli.cli import app
    from mwa_cli.eval.evaluate import evaluate_path
    from mwa_cli.search.build import build_index
    from mwa_cli.search.model import load_search_model
    from mwa_cli.search.query import search
    from mwa_cli.search.store import SearchIndex
    from mwa_cli.train.config import TrainConfig
    from mwa_cli.train.loop import train

    data = train_make_data_dir(tmp_path / "data", n_images=16)
    runs = tmp_path / "runs"
    results = {}
    for method in ("mwa", "full-ft"):
        cfg = TrainConfig(data_dir=str(data), backbone=f"hf:{blip2_dir}", method=method, steps=6, batch_size=8,
                          lr=2e-3, seed=0, log_every=1, val_evals=1, workers=0, out=str(runs), name=method,
                          device="cpu", precision="fp32")
        res = train(cfg)
        assert res.status == "completed" and res.steps == 6, res.message
        rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in rows if r["kind"] == "train"]
        assert losses and all(math.isfinite(x) for x in losses)
        assert evaluate_path(res.run_dir, write=False, device="cpu", precision="fp32")["rsum"] == \
            pytest.approx(res.eval["rsum"])
        results[method] = res

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(photos / f"p{i}.png")
    run_dir = results["mwa"].run_dir
    sm = load_search_model(run_dir, device="cpu")
    summary = build_index(photos, run_dir, tmp_path / "index", captions_dir=data, search_model=sm)
    assert summary["counts"]["images"] == 5
    index = SearchIndex.load(tmp_path / "index")
    assert index.images.shape == (5, 4, 16) and index.meta["dim"] == 16
    hits = search(index, sm, text="a red scratch on a steel plate", top=3)
    q = sm.encode_texts(["a red scratch on a steel plate"])
    brute = similarity(torch.from_numpy(np.array(index.images)), q)[:, 0]  # best query token of each photo
    for hit in hits["images"]:
        assert hit["score"] == pytest.approx(float(brute[index.row_ids.index(hit["image_id"])]), abs=1e-5)
    assert [h["score"] for h in hits["images"]] == pytest.approx(brute.topk(3).values.tolist(), abs=1e-5)
    by_image = search(index, sm, image=photos / "p2.png", top=2)
    assert by_image["images"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # the photo itself, all queries equal
    assert len(by_image["captions"]) == 2

    # the IVF index cannot hold multi-vector images: refused before anything is written
    with pytest.raises(ConfigError, match="--approx is not available"):
        build_index(photos, run_dir, tmp_path / "approx", search_model=sm, approx=True)
    assert not (tmp_path / "approx").exists()

    res = CliRunner().invoke(app, ["report", "--runs", str(runs), "--compare", "full-ft", "--json"],
                             env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)  # progress lines (the zero-shot evaluation) go to stderr
    assert {r["method"] for r in report["runs"]} == {"mwa", "full-ft"}


def test_preset_loads_a_directory_of_its_layout(blip2_dir, tmp_path, monkeypatch):
    """The preset's success path, with the written config swapped for the tiny one (the real one is 4.7 GB)."""
    from mwa_cli.adapters.registry import recommended_lr
    from mwa_cli.models import blip2 as blip2_mod

    cfg = tiny_config().to_dict()
    tiny = {k: cfg[k] for k in ("num_query_tokens", "image_text_hidden_size")}
    tiny["vision_config"] = {k: cfg["vision_config"][k] for k in ("hidden_size", "intermediate_size",
                                                                  "num_hidden_layers", "num_attention_heads",
                                                                  "image_size", "patch_size", "qkv_bias")}
    tiny["qformer_config"] = {k: cfg["qformer_config"][k] for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                                    "num_attention_heads", "intermediate_size",
                                                                    "max_position_embeddings",
                                                                    "cross_attention_frequency",
                                                                    "encoder_hidden_size", "use_qformer_text_input")}
    monkeypatch.setattr(blip2_mod, "BLIP2_ITM_VIT_G", tiny)
    torch.manual_seed(0)
    model, info = build_backbone("blip2-itm-vit-g", weights=str(blip2_dir))
    assert info.name == "blip2-itm-vit-g" and info.weights == str(blip2_dir.resolve()) and info.weights_sha256
    assert isinstance(load_tokenizer(info.tokenizer_path, model.config.text_len), HFTokenizer)
    hf_model, _, _ = build_hf(blip2_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), hf_model.state_dict().values()))
    applied = apply_method(model, "mwa")
    save_adapter(tmp_path, model, applied, info)
    _, applied2, info2 = load_adapter(tmp_path, weights=str(blip2_dir))
    assert info2.name == "blip2-itm-vit-g" and applied2.options == applied.options
    assert recommended_lr("blip2-itm-vit-g", "full-ft") == 1e-5
    random_model, random_info = build_backbone("blip2-itm-vit-g", tokenizer=str(blip2_dir))  # no weights: random
    assert random_info.weights is None and random_info.tokenizer_path == f"hf:{blip2_dir}"
    assert not torch.equal(random_model.hf.text_projection.weight, model.hf.text_projection.weight)


def test_fused_qkv_lora_leaves_the_key_slice_alone():
    torch.manual_seed(0)
    lora = FusedQKVLoRA(8, [0, 2], rank=2, alpha=4.0, dropout=0.0)
    with torch.no_grad():
        for part in lora.parts.values():
            part.lora_B.weight.normal_()
    out = lora(torch.randn(3, 5, 8))
    assert out.shape == (3, 5, 24)
    assert torch.count_nonzero(out[..., 8:16]) == 0 and torch.count_nonzero(out[..., :8]) > 0
    assert torch.count_nonzero(out[..., 16:]) > 0


def test_bad_method_options_are_refused_before_any_change(blip2_dir):
    model, _, _ = build_hf(blip2_dir)
    names = {n for n, _ in model.named_parameters()}
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match="unknown LoRA targets \\['out_proj'\\]") as exc:
        apply_method(model, "lora", {"targets": ["q_proj", "out_proj"]})
    assert "q_proj" in exc.value.hint
    with pytest.raises(ConfigError, match="unknown layer groups \\['text'\\]"):
        apply_method(model, "mwa", {"layers": {"text": "all"}})
    assert {n for n, _ in model.named_parameters()} == names  # nothing was attached
    assert all(p.requires_grad for p in model.parameters())  # nor frozen
