"""The methods (mwa, nke, lora, full-ft, frozen) on BLIP-2 (``mwa_cli.models.blip2.Blip2Retrieval``).

BLIP-2's Q-Former is itself a Multiway layer stack for the contrastive path: its self-attention weights are
shared, and each layer has a query FFN (``intermediate_query`` / ``output_query``, the image stream) and a text
FFN (``intermediate`` / ``output``); for ITC the two streams run separately. MWA maps onto it as onto BEiT-3
(docs/decisions.md, "BLIP-2"):

* **NKE per modality**: in each adapted ViT block (images only) one bottleneck on the residual stream before the
  MLP's LayerNorm, added to the block output (as for the CLIP/SigLIP towers); in each adapted Q-Former layer one
  bottleneck per stream (``nke_query``, ``nke_text``), reading the stream's FFN input ``h`` and adding to the FFN
  output before the post-LN residual (``LN(FFN(h) + h + NKE(h))``: BERT's post-LN form of BEiT-3's
  ``h + FFN(LN(h)) + NKE(h)``).
* **Alignment Enhancer**: one per adapted Q-Former layer, shared by the query and the text stream, added after
  the stream's output (``y + AE(y)``, as BEiT-3's AE after the FFN). The ViT carries images only, so its blocks
  get NKE only.
* **LoRA**: ``q_proj``/``v_proj`` (the default targets) are the q and v slices of the ViT's fused ``qkv``
  projection and the Q-Former self-attention's ``query``/``value``.

All adapters start at zero output, so the adapted model equals the pretrained one at step 0. Layer-wise lr
decay (full-ft) follows LAVIS's BLIP-2: ViT blocks decay with depth, the Q-Former trains at the full rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mwa_cli.adapters.alignment import AlignmentEnhancer
from mwa_cli.adapters.layers import select_layers
from mwa_cli.adapters.lora import LoRA
from mwa_cli.adapters.nke import Bottleneck
from mwa_cli.adapters.registry import PARAM_BUDGET, WIDTH_STEP, _lora_hook, ae_params, auto_rank, resolve_options
from mwa_cli.adapters.two_tower import TowerLayerAdapter, TwoTowerApplied, nke_layer_params
from mwa_cli.errors import ConfigError

TOWERS = ("vision", "qformer")
QKV_SLICES = {"q_proj": 0, "k_proj": 1, "v_proj": 2}  # LoRA target -> slice of the ViT's fused qkv
QFORMER_TARGETS = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}


# ============================================================================ modules
class QFormerLayerAdapter(nn.Module):
    """NKE of the query and the text stream of one Q-Former layer, and the layer's AE shared by both."""

    def __init__(self, nke_query: Bottleneck, nke_text: Bottleneck, ae: AlignmentEnhancer | None):
        super().__init__()
        self.nke_query = nke_query
        self.nke_text = nke_text
        self.ae = ae
        self._h: dict[str, Tensor | None] = {"query": None, "text": None}

    def attach(self, layer: nn.Module) -> None:
        layer.add_module("mwa", self)
        for stream, out, nke in (("query", layer.output_query, self.nke_query), ("text", layer.output, self.nke_text)):
            out.register_forward_pre_hook(self._capture(stream))  # Blip2QFormerOutput(ffn_hidden, h)
            out.LayerNorm.register_forward_pre_hook(self._add_nke(stream, nke))
            if self.ae is not None:
                out.register_forward_hook(self._add_ae)

    def _capture(self, stream: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            self._h[stream] = args[1]
        return hook

    def _add_nke(self, stream: str, nke: Bottleneck):
        def hook(_module: nn.Module, args: tuple) -> tuple:
            h, self._h[stream] = self._h[stream], None
            return (args[0] + nke(h), *args[1:])
        return hook

    def _add_ae(self, _module: nn.Module, _args: tuple, y: Tensor) -> Tensor:
        return y + self.ae(y)


class FusedQKVLoRA(nn.Module):
    """LoRA on chosen slices (q, k, v) of a fused ``qkv`` projection; the other slices get zeros."""

    def __init__(self, dim: int, slices: list[int], rank: int, alpha: float, dropout: float):
        super().__init__()
        self.dim = dim
        self.parts = nn.ModuleDict({str(i): LoRA(dim, dim, rank, alpha, dropout) for i in slices})

    def forward(self, x: Tensor) -> Tensor:
        outs = [self.parts[str(i)](x) if str(i) in self.parts else None for i in range(3)]
        ref = next(o for o in outs if o is not None)
        return torch.cat([o if o is not None else torch.zeros_like(ref) for o in outs], dim=-1)


# ============================================================================ accounting
@dataclass
class Blip2Applied(TwoTowerApplied):
    """``AppliedMethod`` for BLIP-2: layer-wise lr decay over the ViT's blocks only (LAVIS's rule), so the
    Q-Former, the query tokens and the projections train at the full rate. ``layers`` is
    ``{"vision": [...], "qformer": [...]}``."""

    @property
    def depths(self) -> dict[str, int]:
        return {"vision": self.model.config.vision_depth}

    def no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        return super().no_weight_decay(name, param) or name.endswith("query_tokens")


def resolve_blip2_layers(spec: Any, cfg) -> dict[str, list[int]]:
    """``all`` / ``top-K`` / indices applied to the ViT and the Q-Former, or ``{"vision": ..., "qformer": ...}``."""
    depths = {"vision": cfg.vision_depth, "qformer": cfg.qformer_depth}
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(TOWERS))
        if unknown:
            raise ConfigError(f"unknown layer groups {unknown} for BLIP-2", hint="use vision and qformer")
        return {t: select_layers(spec.get(t, "all"), depths[t]) for t in TOWERS}
    return {t: select_layers(spec, depths[t]) for t in TOWERS}


def auto_ae_width_blip2(model, layers: dict[str, list[int]], rank: int) -> int:
    """Widest multiple of 16 keeping NKE + AE within PARAM_BUDGET of the backbone (at least 16)."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    nke = (len(layers["vision"]) * nke_layer_params(cfg.vision_width, rank)
           + 2 * len(layers["qformer"]) * nke_layer_params(cfg.qformer_width, rank))
    n_ae = len(layers["qformer"])
    width = WIDTH_STEP
    while n_ae and n_ae * ae_params(cfg.qformer_width, width + WIDTH_STEP) <= PARAM_BUDGET * total - nke:
        width += WIDTH_STEP
    return width


# ============================================================================ apply
def apply_blip2(model, name: str, options: dict[str, Any] | None = None) -> Blip2Applied:
    """Inject method ``name`` into a BLIP-2 retrieval model and set what trains (see the module docstring)."""
    opts = resolve_options(name, options)
    if name in ("mwa", "nke", "lora"):  # options checked before the model is touched
        opts["layers"] = resolve_blip2_layers(opts["layers"], model.config)
    if name == "lora":
        unknown = sorted(set(opts["targets"]) - set(QKV_SLICES))
        if unknown:
            raise ConfigError(f"unknown LoRA targets {unknown} for BLIP-2", hint=f"choose from {', '.join(QKV_SLICES)}")
    before = {n for n, _ in model.named_parameters()}
    model.requires_grad_(name == "full-ft")
    applied = Blip2Applied(name, opts, model)
    if name in ("mwa", "nke", "lora"):
        layers = opts["layers"]
        applied.layers = layers  # type: ignore[assignment]
        if name == "lora":
            _inject_lora(model, layers, opts)
        else:
            _inject_mwa(model, layers, opts, with_ae=name == "mwa")
        applied.new_param_names = {n for n, _ in model.named_parameters()} - before
        for n, p in model.named_parameters():
            p.requires_grad = n in applied.new_param_names
        model.logit_scale.requires_grad = bool(opts["train_logit_scale"])
        for head in model.head_modules():
            head.requires_grad_(bool(opts["train_heads"]))
    return applied


def _inject_mwa(model, layers: dict[str, list[int]], opts: dict[str, Any], with_ae: bool) -> None:
    cfg = model.config
    if opts["rank"] == "auto":
        opts["rank"] = auto_rank(max(cfg.vision_width, cfg.qformer_width))
    rank, scale, dropout = int(opts["rank"]), float(opts["scale"]), float(opts["dropout"])
    if with_ae:
        if opts["ae_width"] == "auto":
            opts["ae_width"] = auto_ae_width_blip2(model, layers, rank)
        elif opts["ae_width"] == "ffn":
            opts["ae_width"] = cfg.qformer_ffn
    device = model.logit_scale.device
    towers = model.towers
    for i in layers["vision"]:
        adapter = TowerLayerAdapter("vision", Bottleneck(cfg.vision_width, rank, scale, dropout), None).to(device)
        adapter.attach(towers["vision"][i])
    d = cfg.qformer_width
    for i in layers["qformer"]:
        ae = (AlignmentEnhancer(d, int(opts["ae_width"]), cfg.layernorm_eps, bool(opts["ae_zero_init"]))
              if with_ae else None)
        adapter = QFormerLayerAdapter(Bottleneck(d, rank, scale, dropout), Bottleneck(d, rank, scale, dropout), ae)
        adapter.to(device).attach(towers["qformer"][i])


def _inject_lora(model, layers: dict[str, list[int]], opts: dict[str, Any]) -> None:
    rank, alpha, dropout = int(opts["rank"]), float(opts["alpha"]), float(opts["dropout"])
    device = model.logit_scale.device
    towers = model.towers
    for i in layers["vision"]:
        qkv = towers["vision"][i].self_attn.qkv
        lora = FusedQKVLoRA(qkv.in_features, [QKV_SLICES[t] for t in opts["targets"]], rank, alpha, dropout)
        qkv.add_module("lora", lora.to(device))
        qkv.register_forward_hook(_lora_hook)
    for i in layers["qformer"]:
        attn = towers["qformer"][i].attention.attention
        for target in opts["targets"]:
            linear = getattr(attn, QFORMER_TARGETS[target])
            linear.add_module("lora", LoRA(linear.in_features, linear.out_features, rank, alpha, dropout).to(device))
            linear.register_forward_hook(_lora_hook)


__all__ = ["Blip2Applied", "FusedQKVLoRA", "QFormerLayerAdapter", "apply_blip2", "auto_ae_width_blip2",
           "resolve_blip2_layers"]
