"""BEiT-3 Multiway Transformer for retrieval, in native PyTorch.

Numerically equivalent to Microsoft's torchscale BEiT-3 (checked against reference outputs in the tests) and
with the same state-dict names, so the official checkpoints load with ``strict=True``. The model knows nothing
of adapters: methods attach to it through module hooks (see ``mwa_cli.adapters``).

Modality experts: ``A`` = vision, ``B`` = language. ``split`` selects them per forward: ``-1`` all tokens go
through ``A`` (image only), ``0`` all through ``B`` (text only), ``k > 0`` the first ``k`` tokens through ``A``
and the rest through ``B`` (image then text in one sequence).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mwa_cli.errors import ConfigError


@dataclass
class BEiT3Config:
    """Sizes of a BEiT-3 model. Key names follow torchscale's BEiT-3 configuration."""

    img_size: int = 224
    patch_size: int = 16
    vocab_size: int = 64010
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    max_text_positions: int = 1024
    layernorm_eps: float = 1e-5
    in_chans: int = 3
    text_len: int = 64
    drop_path: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BEiT3Config":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown backbone config keys: {', '.join(unknown)}",
                hint=f"accepted keys: {', '.join(sorted(known))}",
            )
        cfg = cls(**data)
        if cfg.embed_dim % cfg.num_heads:
            raise ConfigError(f"embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        if cfg.img_size % cfg.patch_size:
            raise ConfigError(f"img_size {cfg.img_size} is not a multiple of patch_size {cfg.patch_size}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2


class Multiway(nn.Module):
    """Two experts with the same interface: ``A`` for vision tokens, ``B`` for language tokens."""

    def __init__(self, make: Callable[[], nn.Module], make_b: Callable[[], nn.Module] | None = None):
        super().__init__()
        self.A = make()
        self.B = (make_b or make)()

    def forward(self, x: Tensor, split: int) -> Tensor:
        if split == -1:
            return self.A(x)
        if split == 0:
            return self.B(x)
        return torch.cat([self.A(x[:, :split]), self.B(x[:, split:])], dim=1)


class FeedForward(nn.Module):
    """fc1 -> GELU (fp32) -> sub-LN -> fc2, as torchscale's FeedForwardNetwork with subln."""

    def __init__(self, dim: int, hidden: int, eps: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.ffn_layernorm = nn.LayerNorm(hidden, eps=eps)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = F.gelu(x.float()).type_as(x)
        return self.fc2(self.ffn_layernorm(x))


class DropPath(nn.Module):
    """Stochastic depth per sample; identity at eval or rate 0.

    The keep probability is a (non-persistent) buffer, not a Python float, so torch.compile reuses one compiled
    layer for every depth instead of specialising on each layer's rate.
    """

    def __init__(self, rate: float):
        super().__init__()
        self.rate = float(rate)
        self.active = self.rate > 0.0
        self.register_buffer("keep", torch.tensor(1.0 - self.rate), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.active or not self.training:
            return x
        keep = self.keep.to(x.dtype)
        mask = torch.bernoulli(keep.expand((x.shape[0],) + (1,) * (x.ndim - 1)))
        return x * mask / keep


class MultiwayAttention(nn.Module):
    """Self-attention with per-modality q/k/v/out projections and sub-LN before out_proj."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.k_proj = Multiway(lambda: nn.Linear(dim, dim))
        self.v_proj = Multiway(lambda: nn.Linear(dim, dim))
        self.q_proj = Multiway(lambda: nn.Linear(dim, dim))
        self.out_proj = Multiway(lambda: nn.Linear(dim, dim))
        self.inner_attn_ln = Multiway(lambda: nn.LayerNorm(dim, eps=eps))

    def forward(self, x: Tensor, attn_mask: Tensor | None, split: int) -> Tensor:
        b, n, d = x.shape
        q = self.q_proj(x, split).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x, split).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x, split).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.out_proj(self.inner_attn_ln(out, split), split)


class EncoderLayer(nn.Module):
    """Pre-LN Multiway Transformer layer: ``h = x + Attn(LN1(x))``, ``out = h + FFN(LN2(h))``.

    Extension point for adapter methods: a child module named ``mwa``, if present, is called as
    ``mwa(h, out, split, drop_path)`` and returns the layer's output
    (``mwa_cli.adapters.modules.layer_adapters.LayerAdapter``).
    Plain code rather than hooks that stash ``h``: nothing is stored between calls, so torch.compile traces it.
    """

    def __init__(self, cfg: BEiT3Config, drop_path: float):
        super().__init__()
        d, eps = cfg.embed_dim, cfg.layernorm_eps
        self.self_attn = MultiwayAttention(d, cfg.num_heads, eps)
        self.self_attn_layer_norm = Multiway(lambda: nn.LayerNorm(d, eps=eps))
        self.ffn = Multiway(lambda: FeedForward(d, cfg.ffn_dim, eps))
        self.final_layer_norm = Multiway(lambda: nn.LayerNorm(d, eps=eps))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, attn_mask: Tensor | None, split: int) -> Tensor:
        h = x + self.drop_path(self.self_attn(self.self_attn_layer_norm(x, split), attn_mask, split))
        out = h + self.drop_path(self.ffn(self.final_layer_norm(h, split), split))
        adapter = self._modules.get("mwa")
        return out if adapter is None else adapter(h, out, split, self.drop_path)


class PositionalEmbedding(nn.Embedding):
    """Learned positions that start at index 2 (fairseq convention, as torchscale)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        positions = torch.arange(2, x.size(1) + 2, device=x.device)
        return F.embedding(positions, self.weight).unsqueeze(0)


class FirstTokenLayer(nn.Module):
    """An encoder layer computed for the first token alone (no parameters of its own: it runs the layer it is
    given, so the state dict is unchanged and torch.compile can compile it like a layer)."""

    def forward(self, layer: EncoderLayer, x: Tensor, attn_mask: Tensor | None, split: int) -> Tensor:
        """``layer(x)[:, :1]``: the first token's query attends to the keys and values of every token, then the
        FFN and the adapter (the layer's ``mwa`` child, called as the layer calls it) run on that token only. For
        the retrieval heads, which read nothing else of the last layer. [B, 1, d]."""
        attn = layer.self_attn
        b, n, d = x.shape
        xn = layer.self_attn_layer_norm(x, split)
        q = attn.q_proj(xn[:, :1], split).view(b, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(xn, split).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(xn, split).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2).reshape(b, 1, d)
        h = x[:, :1] + layer.drop_path(attn.out_proj(attn.inner_attn_ln(out, split), split))
        out = h + layer.drop_path(layer.ffn(layer.final_layer_norm(h, split), split))
        adapter = layer._modules.get("mwa")
        return out if adapter is None else adapter(h, out, split, layer.drop_path)


class Encoder(nn.Module):
    """Positions + layers + final multiway LayerNorm."""

    def __init__(self, cfg: BEiT3Config):
        super().__init__()
        # Separate position tables for vision (A) and language (B) tokens.
        self.embed_positions = Multiway(lambda: PositionalEmbedding(cfg.num_patches + 3, cfg.embed_dim),
                                        lambda: PositionalEmbedding(cfg.max_text_positions, cfg.embed_dim))
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.layers = nn.ModuleList(EncoderLayer(cfg, rate) for rate in rates)
        self.layer_norm = Multiway(lambda: nn.LayerNorm(cfg.embed_dim, eps=cfg.layernorm_eps))
        self.first_token = FirstTokenLayer()
        self.frozen_prefix = 0

    def forward(self, x: Tensor, padding_mask: Tensor | None, split: int, *, start: int = 0,
                stop: int | None = None, first_token_only: bool = False) -> Tensor:
        """Run layers ``[start, stop)``; the final LayerNorm too when ``stop`` is the depth (the default).

        ``x``: token embeddings [B, N, d] when ``start`` is 0, else the hidden states entering layer ``start``
        (as returned with ``stop=start``); ``padding_mask`` [B, N], nonzero on padding (or None). While autograd is
        on, the layers below ``frozen_prefix`` (and the embeddings) run under ``no_grad`` (see set_frozen_prefix).
        ``first_token_only`` (retrieval, ``split`` -1 or 0): the last layer computes the first token only
        (``FirstTokenLayer``) and the output is [B, 1, d].
        """
        depth = len(self.layers)
        stop = depth if stop is None else stop
        k = min(self.frozen_prefix, stop) if torch.is_grad_enabled() else 0
        attn_mask = pad = None
        if padding_mask is not None:
            pad = padding_mask.bool()
            attn_mask = (~pad)[:, None, None, :]
        with torch.no_grad() if k > start else contextlib.nullcontext():
            if start == 0:
                x = x + self.embed_positions(x, split)
                if pad is not None:
                    x = x.masked_fill(pad.unsqueeze(-1), 0.0)
            for i in range(start, max(k, start)):
                x = self._run_layer(i, x, attn_mask, split, first_token_only)
        for i in range(max(k, start), stop):
            x = self._run_layer(i, x, attn_mask, split, first_token_only)
        return self.layer_norm(x, split) if stop == depth else x

    def _run_layer(self, i: int, x: Tensor, attn_mask: Tensor | None, split: int, first_token_only: bool) -> Tensor:
        layer = self.layers[i]
        if first_token_only and i == len(self.layers) - 1:
            return self.first_token(layer, x, attn_mask, split)
        return layer(x, attn_mask, split)

class VisionEmbedding(nn.Module):
    """Patchify with a strided convolution and prepend the cls token."""

    def __init__(self, cfg: BEiT3Config):
        super().__init__()
        self.img_size = cfg.img_size
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))

    def forward(self, pixel_values: Tensor) -> Tensor:
        if pixel_values.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"expected {self.img_size}x{self.img_size} images, got {tuple(pixel_values.shape[-2:])}"
            )
        x = self.proj(pixel_values).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)


class BEiT3(nn.Module):
    """The BEiT-3 backbone: text embedding, vision embedding, multiway encoder."""

    def __init__(self, cfg: BEiT3Config):
        super().__init__()
        self.text_embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.vision_embed = VisionEmbedding(cfg)
        self.encoder = Encoder(cfg)

    def forward(
        self,
        textual_tokens: Tensor | None = None,
        visual_tokens: Tensor | None = None,
        text_padding_position: Tensor | None = None,
        first_token_only: bool = False,
    ) -> Tensor:
        """Encoder output [B, N, d] for images, texts, or image-then-text sequences; ``first_token_only`` (images
        or texts alone): [B, 1, d], the last layer computed for the first token only (``Encoder.forward``)."""
        if textual_tokens is None and visual_tokens is None:
            raise ValueError("give textual_tokens, visual_tokens or both")
        if textual_tokens is None:
            return self.encoder(self.vision_embed(visual_tokens), None, -1, first_token_only=first_token_only)
        if visual_tokens is None:
            return self.encoder(self.text_embed(textual_tokens), text_padding_position, 0,
                                first_token_only=first_token_only)
        x1 = self.vision_embed(visual_tokens)
        x = torch.cat([x1, self.text_embed(textual_tokens)], dim=1)
        mask = None
        if text_padding_position is not None:
            zeros = torch.zeros(x1.shape[:2], dtype=torch.bool, device=x1.device)
            mask = torch.cat([zeros, text_padding_position.bool()], dim=1)
        return self.encoder(x, mask, x1.shape[1])


class BEiT3Retrieval(nn.Module):
    """BEiT-3 with the retrieval heads: bias-free linear projections of the first token, L2-normalised."""

    text_padding_free = True  # padding is masked: captions may be cut to their batch's length (text_pad.py)

    def __init__(self, cfg: BEiT3Config):
        super().__init__()
        self.config = cfg
        self.beit3 = BEiT3(cfg)
        self.vision_head = nn.Linear(cfg.embed_dim, cfg.embed_dim, bias=False)
        self.language_head = nn.Linear(cfg.embed_dim, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: dict[str, Any] | BEiT3Config) -> "BEiT3Retrieval":
        """Build a randomly initialised model from a config dict (fixture key names) or a BEiT3Config."""
        cfg = config if isinstance(config, BEiT3Config) else BEiT3Config.from_dict(dict(config))
        return cls(cfg)

    def reset_parameters(self) -> None:
        """BEiT-3's initialisation: trunc-normal(0.02) linears, LayerNorm (1, 0), small embeddings."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        d = self.config.embed_dim
        nn.init.normal_(self.beit3.text_embed.weight, std=d**-0.5)
        for table in (self.beit3.encoder.embed_positions.A, self.beit3.encoder.embed_positions.B):
            nn.init.trunc_normal_(table.weight, std=0.02)
        nn.init.trunc_normal_(self.beit3.vision_embed.cls_token, std=0.02)
        nn.init.trunc_normal_(self.beit3.vision_embed.mask_token, std=0.02)

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder layers, for methods that inject into them."""
        return self.beit3.encoder.layers

    def compile_layers(self, **options: Any) -> None:
        """Regional compilation: ``torch.compile`` each encoder layer (adapter included). The layers share one
        compiled code object, so compiling costs about one layer's worth per variant (image/text, training/eval,
        with/without autograd) instead of the whole depth, and the embeddings and heads stay eager."""
        import torch._dynamo

        from mwa_cli.models.text_pad import TEXT_BUCKETS

        # variants of one layer: split (-1, 0) x autograd on/off x train/eval x with/without an adapter (16); text
        # batches come in bucket lengths (text_pad.py), which dynamo makes one dynamic length at the second one
        # seen; the limit would hold even if each bucket kept a graph of its own
        limit = 16 * (len(TEXT_BUCKETS) + 1)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit,
                                                               2 * limit)
        for layer in self.layers:
            layer.compile(**options)  # options of torch.compile (tests use backend="aot_eager")
        self.beit3.encoder.first_token.compile(**options)  # the last layer of encode_image / encode_text

    def store_frozen_in(self, dtype: torch.dtype) -> int:
        """Keep the frozen Linear and Conv2d weights (and biases) in ``dtype``; returns how many tensors changed.

        For autocast training in that dtype: autocast would cast them to it in every forward anyway (same
        rounding), so results are unchanged while each step skips those casts and the weights take half the
        memory. LayerNorms and embeddings stay fp32 (autocast runs them in fp32)."""
        changed = 0
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                for p in (module.weight, module.bias):
                    if p is not None and not p.requires_grad and p.dtype != dtype:
                        p.data = p.data.to(dtype)
                        changed += 1
        return changed

    def set_frozen_prefix(self, k: int) -> None:
        """Run layers ``< k`` without autograd; valid only when nothing in them (nor the embeddings) trains."""
        self.beit3.encoder.frozen_prefix = max(0, min(int(k), self.config.depth))

    def image_hidden(self, pixel_values: Tensor, stop: int) -> Tensor:
        """Hidden states [B, 1 + patches, d] entering layer ``stop`` (what a feature cache stores)."""
        return self.beit3.encoder(self.beit3.vision_embed(pixel_values), None, -1, stop=stop)

    def text_hidden(self, input_ids: Tensor, padding_mask: Tensor, stop: int) -> Tensor:
        """Hidden states [B, L, d] of the captions entering layer ``stop``."""
        return self.beit3.encoder(self.beit3.text_embed(input_ids), padding_mask, 0, stop=stop)

    # The heads read the first token ([CLS]) only: the last layer computes that token alone (Encoder.forward's
    # first_token_only; docs/decisions.md, "The last layer for [CLS] only").
    def encode_image_hidden(self, hidden: Tensor, start: int) -> Tensor:
        """``encode_image`` from the hidden states entering layer ``start`` (``image_hidden(..., start)``)."""
        x = self.beit3.encoder(hidden, None, -1, start=start, first_token_only=True)
        return F.normalize(self.vision_head(x[:, 0]), dim=-1)

    def encode_text_hidden(self, hidden: Tensor, padding_mask: Tensor, start: int) -> Tensor:
        """``encode_text`` from the hidden states entering layer ``start`` (``text_hidden(..., start)``)."""
        x = self.beit3.encoder(hidden, padding_mask, 0, start=start, first_token_only=True)
        return F.normalize(self.language_head(x[:, 0]), dim=-1)

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """[B, 3, S, S] images normalised with mean = std = 0.5 -> [B, d] unit vectors."""
        x = self.beit3(visual_tokens=pixel_values, first_token_only=True)
        return F.normalize(self.vision_head(x[:, 0]), dim=-1)

    def encode_text(self, input_ids: Tensor, padding_mask: Tensor) -> Tensor:
        """[B, L] token ids and padding mask (1 = pad) -> [B, d] unit vectors."""
        x = self.beit3(textual_tokens=input_ids, text_padding_position=padding_mask, first_token_only=True)
        return F.normalize(self.language_head(x[:, 0]), dim=-1)
