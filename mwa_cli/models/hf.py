"""Hugging Face two-tower backbones (``--backbone hf:<model id or local dir>``): CLIP, SigLIP, SigLIP 2.

``HFDualEncoder`` wraps a transformers ``CLIPModel`` / ``SiglipModel`` / ``Siglip2Model`` behind the interface the
trainer and the evaluator use for BEiT-3 (``encode_image``, ``encode_text(ids, mask)``, ``logit_scale``, a
``config`` with ``img_size``/``text_len``/``depth``/``vocab_size``). The transformers model is kept unchanged under
``.hf`` (its state-dict names stay those of transformers); methods attach to it through hooks
(``mwa_cli.adapters.two_tower``).

Pixels: the data path gives every backbone the project's pixels (RGB in [0, 1] normalised with mean = std = 0.5,
``mwa_cli.models.preprocess``); a backbone whose image processor expects other statistics (CLIP's OpenAI mean/std)
declares them as ``image_mean`` / ``image_std`` and converts inside ``encode_image`` (a per-channel affine map, the
same arithmetic as the processor's normalisation). SigLIP's statistics are 0.5/0.5: the conversion is skipped.

Text: the model's own tokenizer (``AutoTokenizer`` from the same directory / id), wrapped by ``HFTokenizer`` to
give fixed-length ``(ids, padding_mask)`` batches like ``Beit3Tokenizer``. CLIP uses its attention mask (and pools
the first EOS token); SigLIP and SigLIP 2 were trained on ``max_length`` padding without a mask and pool the last
position, so their mask is not passed to the model (as transformers' own examples do).

Loading: a local directory is read with ``local_files_only=True`` (offline); a hub id goes through
``from_pretrained`` (network or the hub cache; ``HF_HUB_OFFLINE=1`` respected). Weights are loaded in float32
(transformers 5 would otherwise keep the checkpoint's dtype), as the trainer's mixed precision expects.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mwa_cli.errors import ConfigError
from mwa_cli.models.preprocess import MEAN as PROJECT_MEAN  # the normalisation every backbone receives
from mwa_cli.models.preprocess import STD as PROJECT_STD

PREFIX = "hf:"
SIGMOID_TYPES = ("siglip", "siglip2")
SUPPORTED_TYPES = ("clip", *SIGMOID_TYPES)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "_commit_hash", "name_or_path", "dtype",
                         "torch_dtype", "architectures", "_attn_implementation_autoset", "output_hidden_states",
                         "output_attentions", "return_dict", "use_cache")


def is_hf_name(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


@dataclass
class HFBackboneConfig:
    """The sizes the trainer, the evaluator and the methods read (``depth`` = the deeper tower)."""

    model_type: str
    img_size: int
    patch_size: int
    text_len: int
    vocab_size: int
    vision_width: int
    text_width: int
    vision_depth: int
    text_depth: int
    vision_ffn: int
    text_ffn: int
    layernorm_eps: float
    config_sha256: str

    @property
    def depth(self) -> int:
        return max(self.vision_depth, self.text_depth)

    @property
    def embed_dim(self) -> int:
        return self.vision_width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _canonical_config(config) -> dict[str, Any]:
    def clean(obj):
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in sorted(obj.items()) if k not in _VOLATILE_CONFIG_KEYS}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    return clean(config.to_dict())


def config_sha256(config) -> str:
    """Hash of the transformers config without volatile keys (version, name, dtype): ties artefacts to sizes."""
    text = json.dumps(_canonical_config(config), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_class(model_type: str):
    """The transformers class of a supported model type (a clear error for any other)."""
    import transformers

    names = {"clip": "CLIPModel", "siglip": "SiglipModel", "siglip2": "Siglip2Model",
             "blip-2": "Blip2ForImageTextRetrieval"}
    cls = getattr(transformers, names.get(model_type, ""), None)
    if cls is None:
        raise ConfigError(f"unsupported Hugging Face model type {model_type!r}",
                          hint=f"hf: backbones support {', '.join(SUPPORTED_TYPES)} (CLIPModel, SiglipModel"
                               + (", Siglip2Model" if hasattr(transformers, "Siglip2Model") else "")
                               + ") and BLIP-2 retrieval (Blip2ForImageTextRetrieval)")
    return cls


def backbone_config(config) -> HFBackboneConfig:
    """``HFBackboneConfig`` of a transformers CLIP/SigLIP/SigLIP 2 config."""
    mt = config.model_type
    if mt not in SUPPORTED_TYPES:
        model_class(mt)  # raises with the supported list
    v, t = config.vision_config, config.text_config
    if mt == "siglip2":  # NaFlex: fixed square grid of num_patches (256 -> 16 x 16 patches)
        side = int(round(math.sqrt(v.num_patches)))
        img_size = side * v.patch_size
    else:
        img_size = int(v.image_size)
    return HFBackboneConfig(
        model_type=mt, img_size=img_size, patch_size=int(v.patch_size), text_len=int(t.max_position_embeddings),
        vocab_size=int(t.vocab_size), vision_width=int(v.hidden_size), text_width=int(t.hidden_size),
        vision_depth=int(v.num_hidden_layers), text_depth=int(t.num_hidden_layers),
        vision_ffn=int(v.intermediate_size), text_ffn=int(t.intermediate_size),
        layernorm_eps=float(getattr(v, "layer_norm_eps", 1e-5)), config_sha256=config_sha256(config))


def _pooled(out) -> Tensor:
    return out if isinstance(out, Tensor) else out.pooler_output


class HFDualEncoder(nn.Module):
    """A transformers two-tower model with the project's retrieval interface (outputs L2-normalised)."""

    two_tower = True  # dispatch key for mwa_cli.adapters.registry.apply_method

    def __init__(self, hf_model: nn.Module, image_mean=None, image_std=None):
        super().__init__()
        self.hf = hf_model
        self.config = backbone_config(hf_model.config)
        mt = self.config.model_type
        if image_mean is None or image_std is None:
            image_mean, image_std = (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD) if mt == "clip" else ((0.5,) * 3, (0.5,) * 3)
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)
        # project pixels p = (x - 0.5) / 0.5  ->  model pixels (x - mean) / std  =  p * a + b
        a = [PROJECT_STD / s for s in self.image_std]
        b = [(PROJECT_MEAN - m) / s for m, s in zip(self.image_mean, self.image_std)]
        self._renormalise = any(abs(x - 1.0) > 1e-12 for x in a) or any(abs(x) > 1e-12 for x in b)
        self.register_buffer("_pix_a", torch.tensor(a).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_pix_b", torch.tensor(b).view(1, 3, 1, 1), persistent=False)
        self.loss_kind = "sigmoid" if mt in SIGMOID_TYPES else "softmax"
        self.text_uses_mask = mt == "clip"
        self.text_padding_free = self.text_uses_mask  # SigLIP reads its last position: keep the fixed length
        self.frozen_prefix = 0

    # ------------------------------------------------------------------ structure for the methods
    @property
    def towers(self) -> dict[str, nn.ModuleList]:
        """Encoder layers of each tower (each layer has ``self_attn.{q,k,v}_proj``, ``layer_norm2``, ``mlp``)."""
        return {"vision": self.hf.vision_model.encoder.layers, "text": self.hf.text_model.encoder.layers}

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.hf.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return getattr(self.hf, "logit_bias", None)

    def head_modules(self) -> list[nn.Module]:
        """Projection heads (frozen unless ``train_heads``): CLIP's projections, SigLIP's pooling/text heads."""
        heads = [getattr(self.hf, n, None) for n in ("visual_projection", "text_projection")]
        heads += [getattr(self.hf.vision_model, "head", None), getattr(self.hf.text_model, "head", None)]
        return [h for h in heads if isinstance(h, nn.Module)]

    def set_frozen_prefix(self, k: int) -> None:
        """Recorded only: autograd records nothing below the lowest trainable layer of either tower anyway."""
        self.frozen_prefix = max(0, int(k))

    # ------------------------------------------------------------------ encoders
    def model_pixels(self, pixel_values: Tensor) -> Tensor:
        """Project-normalised pixels (mean = std = 0.5) -> the normalisation the model's processor uses."""
        if not self._renormalise:
            return pixel_values
        return pixel_values * self._pix_a.to(pixel_values.dtype) + self._pix_b.to(pixel_values.dtype)

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """[B, 3, S, S] images normalised with mean = std = 0.5 (the project's pixels) -> [B, d] unit vectors."""
        s = self.config.img_size
        if pixel_values.shape[-2:] != (s, s):
            raise ValueError(f"expected {s}x{s} images, got {tuple(pixel_values.shape[-2:])}")
        px = self.model_pixels(pixel_values)
        if self.config.model_type == "siglip2":
            out = self._siglip2_image(px)
        else:
            out = self.hf.get_image_features(pixel_values=px)
        return F.normalize(_pooled(out), dim=-1)

    def _siglip2_image(self, px: Tensor):
        """SigLIP 2 (NaFlex) takes flattened patches: a fixed square grid, no padding patches."""
        b, c, h, w = px.shape
        p = self.config.patch_size
        nh, nw = h // p, w // p
        patches = px.reshape(b, c, nh, p, nw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, nh * nw, p * p * c)
        mask = torch.ones(b, nh * nw, dtype=torch.long, device=px.device)
        shapes = torch.tensor([[nh, nw]] * b, dtype=torch.long, device=px.device)
        return self.hf.get_image_features(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes)

    def encode_text(self, input_ids: Tensor, padding_mask: Tensor) -> Tensor:
        """[B, L] token ids of the model's tokenizer and padding mask (1 = pad) -> [B, d] unit vectors."""
        if self.text_uses_mask:
            out = self.hf.get_text_features(input_ids=input_ids, attention_mask=(padding_mask == 0).long())
        else:
            out = self.hf.get_text_features(input_ids=input_ids)
        return F.normalize(_pooled(out), dim=-1)


class HFTokenizer:
    """A transformers tokenizer giving fixed-length ``(input_ids, padding_mask)`` batches (1 = pad)."""

    def __init__(self, tokenizer, *, max_len: int, path: str | None = None):
        if max_len < 3:
            raise ConfigError(f"max_len must be at least 3 (got {max_len})")
        self.tok = tokenizer
        self.max_len = int(max_len)
        self.path = path

    @classmethod
    def from_pretrained(cls, source: str, *, max_len: int) -> "HFTokenizer":
        from transformers import AutoTokenizer

        local = Path(source).is_dir()
        try:
            tok = AutoTokenizer.from_pretrained(source, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the tokenizer of {source}: {exc}",
                              hint="the model directory needs its tokenizer files (tokenizer.json or the "
                                   "sentencepiece model) beside config.json") from None
        return cls(tok, max_len=max_len, path=f"{PREFIX}{source}")

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def sha256(self) -> str | None:
        return None

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def encode_batch(self, texts: Iterable[str]) -> tuple[Tensor, Tensor]:
        texts = list(texts)
        if not texts:
            empty = torch.zeros((0, self.max_len), dtype=torch.long)
            return empty, empty.clone()
        from mwa_cli.models.text_cut import note_cut

        room = self.max_len - self.tok.num_special_tokens_to_add()
        note_cut([t for t, ids in zip(texts, self.tok(texts, add_special_tokens=False)["input_ids"])
                  if len(ids) > room], self.max_len)
        enc = self.tok(texts, padding="max_length", truncation=True, max_length=self.max_len,
                       return_attention_mask=True, return_tensors="pt")
        ids = enc["input_ids"].long()
        mask = (enc["attention_mask"] == 0).long()
        return ids, mask

    def unknown_report(self, texts: Iterable[str], top: int = 20) -> dict:
        """Same keys as ``Beit3Tokenizer.unknown_report`` (characters are not traced back: empty list)."""
        unk = self.tok.unk_token_id
        per_text, total = [], 0
        for text in texts:
            ids = self.encode(text)
            per_text.append(sum(1 for i in ids if unk is not None and i == unk))
            total += len(ids)
        unknown = sum(per_text)
        return {"texts": len(per_text), "tokens": total, "unknown_tokens": unknown,
                "unknown_fraction": (unknown / total) if total else 0.0,
                "texts_with_unknown": sum(1 for n in per_text if n), "per_text_unknown": per_text,
                "top_unknown_characters": []}
