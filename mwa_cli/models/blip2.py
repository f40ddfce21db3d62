"""BLIP-2 image-text retrieval (transformers' ``Blip2ForImageTextRetrieval``) behind the project's interface.

The contrastive (ITC) path of BLIP-2, as transformers computes it with ``use_image_text_matching_head=False``:

* image: ViT -> the Q-Former's learned query tokens cross-attend to the ViT output -> ``vision_projection`` of
  every query token -> L2-normalised: ``[B, Q, d]`` (Q = 32 query tokens, d = 256), one vector per query token;
* text: the Q-Former's text stream alone (its word/position embeddings, the shared self-attention, the
  text-specific FFN) -> ``text_projection`` of the [CLS] token -> L2-normalised ``[B, d]``;
* score: the best query token, ``max_q <img_q, txt>`` (``mwa_cli.similarity``).

The transformers model stays unchanged under ``.hf`` (state-dict names are transformers'); methods attach to it
through hooks (``mwa_cli.adapters.blip2``). transformers' model has no temperature (the converted checkpoints
drop LAVIS's ``temp``): ``logit_scale`` is this wrapper's own, initialised to BLIP-2's ``log(1 / 0.07)``.

``blip2-itm-vit-g`` names the official ``Salesforce/blip2-itm-vit-g`` layout (ViT-g/14 at 224 px, 39 layers,
width 1408; Q-Former 12 layers, width 768, 32 queries; projections to 256): its sizes are written below from
the published config, so the architecture builds without a download (meta device, random-weight benchmarks);
``--weights DIR`` loads a local copy of the hub directory and checks it has that layout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mwa_cli.errors import ConfigError
from mwa_cli.models.hf import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PROJECT_MEAN, PROJECT_STD, config_sha256

MODEL_TYPE = "blip-2"
ARCHITECTURE = "Blip2ForImageTextRetrieval"
PRESET = "blip2-itm-vit-g"
DEFAULT_TEXT_LEN = 32  # LAVIS's max_txt_len for BLIP-2 retrieval; the Q-Former allows up to 512 positions
ITC_TEMPERATURE = 0.07  # BLIP-2's initial contrastive temperature

# Salesforce/blip2-itm-vit-g config.json (the sizes that matter; the rest are transformers' defaults).
BLIP2_ITM_VIT_G: dict[str, Any] = {
    "vision_config": dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                          image_size=224, patch_size=14, qkv_bias=True, layer_norm_eps=1e-6, hidden_act="gelu"),
    "qformer_config": dict(vocab_size=30523, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=512, cross_attention_frequency=2,
                           encoder_hidden_size=1408, use_qformer_text_input=True, layer_norm_eps=1e-12,
                           hidden_act="gelu", pad_token_id=0),
    "num_query_tokens": 32,
    "image_text_hidden_size": 256,
}


@dataclass
class Blip2BackboneConfig:
    """The sizes the trainer, the evaluator and the methods read (``depth`` = ViT + Q-Former layers)."""

    model_type: str
    img_size: int
    patch_size: int
    text_len: int
    vocab_size: int
    vision_width: int
    qformer_width: int
    vision_depth: int
    qformer_depth: int
    vision_ffn: int
    qformer_ffn: int
    num_query_tokens: int
    embed_dim: int
    cross_attention_frequency: int
    vision_layernorm_eps: float
    layernorm_eps: float
    config_sha256: str

    @property
    def depth(self) -> int:
        return self.vision_depth + self.qformer_depth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_retrieval_config(config) -> None:
    """Refuse a BLIP-2 config that is not the retrieval model (a captioning/VQA checkpoint has no ITC heads)."""
    archs = list(getattr(config, "architectures", None) or [])
    if archs and ARCHITECTURE not in archs:
        raise ConfigError(f"this BLIP-2 checkpoint is a {', '.join(archs)}, not an image-text retrieval model",
                          hint=f"use a {ARCHITECTURE} checkpoint such as Salesforce/blip2-itm-vit-g "
                               f"(mwa's preset: --backbone {PRESET} --weights DIR)")
    if not getattr(config.qformer_config, "use_qformer_text_input", False):
        raise ConfigError("this BLIP-2 config has no Q-Former text stream (qformer_config.use_qformer_text_input "
                          "is false): it cannot embed captions",
                          hint=f"use a {ARCHITECTURE} checkpoint such as Salesforce/blip2-itm-vit-g")


def blip2_backbone_config(config) -> Blip2BackboneConfig:
    """``Blip2BackboneConfig`` of a transformers ``Blip2Config`` (retrieval layout)."""
    check_retrieval_config(config)
    v, q = config.vision_config, config.qformer_config
    return Blip2BackboneConfig(
        model_type=MODEL_TYPE, img_size=int(v.image_size), patch_size=int(v.patch_size),
        text_len=min(DEFAULT_TEXT_LEN, int(q.max_position_embeddings)), vocab_size=int(q.vocab_size),
        vision_width=int(v.hidden_size), qformer_width=int(q.hidden_size), vision_depth=int(v.num_hidden_layers),
        qformer_depth=int(q.num_hidden_layers), vision_ffn=int(v.intermediate_size),
        qformer_ffn=int(q.intermediate_size), num_query_tokens=int(config.num_query_tokens),
        embed_dim=int(config.image_text_hidden_size), cross_attention_frequency=int(q.cross_attention_frequency),
        vision_layernorm_eps=float(v.layer_norm_eps), layernorm_eps=float(q.layer_norm_eps),
        config_sha256=config_sha256(config))


class Blip2Retrieval(nn.Module):
    """BLIP-2's ITC path with the project's retrieval interface (images ``[B, Q, d]``, texts ``[B, d]``)."""

    two_tower = False
    blip2 = True  # dispatch key for mwa_cli.adapters.registry.apply_method
    loss_kind = "softmax"

    def __init__(self, hf_model: nn.Module, image_mean=None, image_std=None):
        super().__init__()
        self.hf = hf_model
        self.config = blip2_backbone_config(hf_model.config)
        if image_mean is None or image_std is None:  # BLIP-2's processor uses the OpenAI CLIP statistics
            image_mean, image_std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)
        # project pixels p = (x - 0.5) / 0.5  ->  model pixels (x - mean) / std  =  p * a + b (as HFDualEncoder)
        a = [PROJECT_STD / s for s in self.image_std]
        b = [(PROJECT_MEAN - m) / s for m, s in zip(self.image_mean, self.image_std)]
        self.register_buffer("_pix_a", torch.tensor(a).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_pix_b", torch.tensor(b).view(1, 3, 1, 1), persistent=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / ITC_TEMPERATURE),
                                                     device=hf_model.query_tokens.device))
        self.image_vectors = self.config.num_query_tokens  # embeddings per image (mwa_cli.similarity)
        self.frozen_prefix = 0

    # ------------------------------------------------------------------ structure for the methods
    @property
    def towers(self) -> dict[str, nn.ModuleList]:
        """ViT blocks (images only) and Q-Former layers (shared self-attention, query and text FFNs)."""
        return {"vision": self.hf.vision_model.encoder.layers, "qformer": self.hf.qformer.encoder.layer}

    @property
    def logit_bias(self) -> None:
        return None

    def head_modules(self) -> list[nn.Module]:
        """The ITC projections (frozen unless ``train_heads``)."""
        return [self.hf.vision_projection, self.hf.text_projection]

    def set_frozen_prefix(self, k: int) -> None:
        """Recorded only: autograd records nothing below the lowest trainable layer anyway."""
        self.frozen_prefix = max(0, int(k))

    def model_pixels(self, pixel_values: Tensor) -> Tensor:
        """Project-normalised pixels (mean = std = 0.5) -> the BLIP-2 processor's normalisation."""
        return pixel_values * self._pix_a.to(pixel_values.dtype) + self._pix_b.to(pixel_values.dtype)

    # ------------------------------------------------------------------ encoders
    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """[B, 3, S, S] images normalised with mean = std = 0.5 -> [B, Q, d] unit vectors (one per query)."""
        s = self.config.img_size
        if pixel_values.shape[-2:] != (s, s):
            raise ValueError(f"expected {s}x{s} images, got {tuple(pixel_values.shape[-2:])}")
        hf = self.hf
        image_embeds = hf.vision_model(pixel_values=self.model_pixels(pixel_values)).last_hidden_state
        ones = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = hf.query_tokens.expand(image_embeds.shape[0], -1, -1)
        out = hf.qformer(query_embeds=queries, encoder_hidden_states=image_embeds,
                         encoder_attention_mask=ones).last_hidden_state
        out = out.to(hf.vision_projection.weight.dtype)
        return F.normalize(hf.vision_projection(out), dim=-1)

    def encode_text(self, input_ids: Tensor, padding_mask: Tensor) -> Tensor:
        """[B, L] BERT token ids and padding mask (1 = pad) -> [B, d] unit vectors (the [CLS] token)."""
        hf = self.hf
        out = hf.qformer(query_embeds=hf.embeddings(input_ids=input_ids), query_length=0,
                         attention_mask=(padding_mask == 0).long()).last_hidden_state
        cls = out[:, 0, :].to(hf.text_projection.weight.dtype)
        return F.normalize(hf.text_projection(cls), dim=-1)


def preset_config():
    """The transformers config of ``blip2-itm-vit-g``, from the sizes written above."""
    from transformers import Blip2Config

    cfg = Blip2Config(**BLIP2_ITM_VIT_G)
    cfg.architectures = [ARCHITECTURE]
    return cfg


def check_preset_layout(config) -> None:
    """Refuse a model directory whose sizes are not the ``blip2-itm-vit-g`` layout."""
    want = blip2_backbone_config(preset_config()).to_dict()
    have = blip2_backbone_config(config).to_dict()
    diffs = [f"{k} {have[k]} (expected {want[k]})" for k in want if k != "config_sha256" and have[k] != want[k]]
    if diffs:
        raise ConfigError(f"the model directory is not the {PRESET} layout: " + ", ".join(diffs),
                          hint="give a local copy of Salesforce/blip2-itm-vit-g, or use --backbone hf:DIR for "
                               "another BLIP-2 retrieval model")


__all__ = ["BLIP2_ITM_VIT_G", "PRESET", "Blip2BackboneConfig", "Blip2Retrieval", "blip2_backbone_config",
           "check_preset_layout", "check_retrieval_config", "preset_config"]
