"""The methods (mwa, nke, lora, full-ft, frozen) on two-tower backbones (``mwa_cli.models.hf.HFDualEncoder``).

MWA's parts map onto separate towers as follows (docs/decisions.md, "Hugging Face backbones"):

* **NKE** — one ``Bottleneck`` per adapted encoder layer of *each* tower (the tower is the modality, as the
  Multiway expert is in BEiT-3), parallel to the layer's MLP: its input is the residual stream ``h`` before the
  MLP's LayerNorm (``layer_norm2``, read with a forward pre-hook), its output is added to the layer output.
* **Alignment Enhancer** — shared across the towers, one module per *pair* of layers, added after the layer as in
  BEiT-3 (``out + AE(out)``). Equal widths (SigLIP): a plain ``AlignmentEnhancer`` applied to both towers' layer
  outputs. Different widths (CLIP: vision 768, text 512): ``SharedCoreAE``, per-tower in/out projections around a
  shared core (LayerNorm + w x w linear). Different depths: the shallower tower's layers are paired one to one with
  layers of the deeper tower spread proportionally and aligned at the top (``pair_layers``); the deeper tower's
  unpaired layers get NKE only.
* **LoRA** — on ``q_proj``/``v_proj`` of both towers (forward hook, as for BEiT-3).

All adapters start at zero output, so the adapted model equals the pretrained one at step 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mwa_cli.adapters.alignment import AlignmentEnhancer
from mwa_cli.adapters.layers import select_layers
from mwa_cli.adapters.lora import LoRA
from mwa_cli.adapters.nke import Bottleneck
from mwa_cli.adapters.registry import (PARAM_BUDGET, WIDTH_STEP, AppliedMethod, _lora_hook, auto_rank,
                                       resolve_options)

TOWERS = ("vision", "text")
NO_DECAY_KEYS = ("logit_scale", "logit_bias", "position_embedding", "class_embedding", "probe")
_LAYER_RE = re.compile(r"^hf\.(vision|text)_model\.encoder\.layers\.(\d+)\.")
AE_CONTAINER = "mwa_ae"


# ============================================================================ layer bookkeeping
def tower_layer_id(name: str, depths: dict[str, int]) -> tuple[str | None, int, int]:
    """(tower, layer id, tower depth) of a parameter: embeddings 0, ``layers.j`` j+1, the rest depth+1.

    Parameters outside both towers (logit scale/bias, CLIP's projections, the method's shared AE) get the deeper
    tower's depth + 1, i.e. the full learning rate.
    """
    m = _LAYER_RE.match(name)
    if m:
        tower = m.group(1)
        return tower, int(m.group(2)) + 1, depths[tower]
    for tower in TOWERS:
        if name.startswith(f"hf.{tower}_model."):
            d = depths[tower]
            return tower, (0 if ".embeddings." in name else d + 1), d
    d = max(depths.values())
    return None, d + 1, d


def pair_layers(vision_depth: int, text_depth: int) -> list[tuple[int, int]]:
    """AE pairs ``(vision layer, text layer)``: one per layer of the shallower tower, the deeper tower's partner
    spread proportionally and aligned at the top (equal depths: ``(i, i)``; 12 vs 6: text j with vision 2j+1)."""
    n = min(vision_depth, text_depth)

    def partner(depth: int, s: int) -> int:
        return depth - 1 - ((n - 1 - s) * depth) // n

    return [(partner(vision_depth, s), partner(text_depth, s)) for s in range(n)]


def resolve_tower_layers(spec: Any, depths: dict[str, int]) -> dict[str, list[int]]:
    """``all`` / ``top-K`` / indices applied to each tower, or an explicit ``{"vision": ..., "text": ...}``."""
    if isinstance(spec, dict):
        return {t: select_layers(spec.get(t, "all"), depths[t]) for t in TOWERS}
    return {t: select_layers(spec, depths[t]) for t in TOWERS}


# ============================================================================ modules
class SharedCoreAE(nn.Module):
    """AE for towers of different widths: per-tower ``proj_in`` (d_t -> w) and ``proj_out`` (w -> d_t) around a
    shared core ``GELU -> LN(w) -> Linear(w, w) -> GELU``; ``proj_out`` zero-initialised (step-0 identity)."""

    def __init__(self, dims: dict[str, int], width: int, eps: float, zero_init: bool = True):
        super().__init__()
        self.proj_in = nn.ModuleDict({t: nn.Linear(d, width) for t, d in dims.items()})
        self.ffn_layernorm = nn.LayerNorm(width, eps=eps)
        self.core = nn.Linear(width, width)
        self.proj_out = nn.ModuleDict({t: nn.Linear(width, d) for t, d in dims.items()})
        for lin in [*self.proj_in.values(), self.core, *self.proj_out.values()]:
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        if zero_init:
            for lin in self.proj_out.values():
                nn.init.zeros_(lin.weight)

    def forward(self, y: Tensor, tower: str) -> Tensor:
        x = self.proj_in[tower](y)
        x = self.ffn_layernorm(F.gelu(x.float()).type_as(x))
        x = self.core(x)
        x = F.gelu(x.float()).type_as(x)
        return self.proj_out[tower](x)


def ae_pair_params(dims: dict[str, int], width: int) -> int:
    """Parameters of one AE module (shared by a layer pair)."""
    dv, dt = dims["vision"], dims["text"]
    if dv == dt:
        return 2 * dv * width + 3 * width + dv
    return sum(2 * d * width + width + d for d in (dv, dt)) + width * width + 3 * width


def nke_layer_params(dim: int, rank: int) -> int:
    return 2 * dim * rank + rank + dim


class TowerLayerAdapter(nn.Module):
    """NKE of one tower layer (registered here) + a reference to its pair's shared AE (registered on the model)."""

    def __init__(self, tower: str, nke: Bottleneck | None, ae: nn.Module | None):
        super().__init__()
        self.tower = tower
        self.nke = nke
        self._ae = (ae,) if ae is not None else ()  # a tuple: not a sub-module here (it lives in model.mwa_ae)
        self._h: Tensor | None = None

    def attach(self, layer: nn.Module) -> None:
        layer.add_module("mwa", self)
        if self.nke is not None:
            layer.layer_norm2.register_forward_pre_hook(self._capture_hook)
        layer.register_forward_hook(self._output_hook)

    def _capture_hook(self, _module: nn.Module, args: tuple) -> None:
        self._h = args[0]

    def _output_hook(self, _layer: nn.Module, _args: tuple, out):
        hs = out[0] if isinstance(out, tuple) else out
        if self.nke is not None:
            hs = hs + self.nke(self._h)
            self._h = None
        if self._ae:
            ae = self._ae[0]
            hs = hs + (ae(hs) if isinstance(ae, AlignmentEnhancer) else ae(hs, self.tower))
        return (hs, *out[1:]) if isinstance(out, tuple) else hs


# ============================================================================ accounting
@dataclass
class TwoTowerApplied(AppliedMethod):
    """``AppliedMethod`` whose layer-wise lr decay follows each tower's own depth. ``layers`` is
    ``{"vision": [...], "text": [...]}``."""

    @property
    def depths(self) -> dict[str, int]:
        cfg = self.model.config
        return {"vision": cfg.vision_depth, "text": cfg.text_depth}

    @property
    def lowest_trainable_layer(self) -> int:
        """Lowest layer (either tower) holding a trainable parameter; 0 if embeddings train, depth if none."""
        depths = self.depths
        ids = [tower_layer_id(n, depths)[1] for n, _ in self.trainable_named_parameters()]
        return max(0, min(ids) - 1) if ids else max(depths.values())

    def decay_scale(self, name: str, layer_decay: float) -> float:
        """As BEiT-3, per tower: layer j of a tower of depth L gets ``layer_decay ** (L - j)``, embeddings
        ``layer_decay ** (L + 1)``."""
        _tower, lid, depth = tower_layer_id(name, self.depths)
        return layer_decay ** (depth + 1 - lid)

    def no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        return param.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_KEYS)


# ============================================================================ apply
def auto_ae_width_two_tower(model, layers: dict[str, list[int]], rank: int, n_ae: int) -> int:
    """Widest multiple of 16 keeping NKE + AE within PARAM_BUDGET of the backbone (at least 16)."""
    cfg = model.config
    dims = {"vision": cfg.vision_width, "text": cfg.text_width}
    total = sum(p.numel() for p in model.parameters())
    budget = PARAM_BUDGET * total - sum(len(layers[t]) * nke_layer_params(dims[t], rank) for t in TOWERS)
    width = WIDTH_STEP
    while n_ae and n_ae * ae_pair_params(dims, width + WIDTH_STEP) <= budget:
        width += WIDTH_STEP
    return width


def apply_two_tower(model, name: str, options: dict[str, Any] | None = None) -> TwoTowerApplied:
    """Inject method ``name`` into a two-tower model and set what trains (see the module docstring)."""
    opts = resolve_options(name, options)
    cfg = model.config
    depths = {"vision": cfg.vision_depth, "text": cfg.text_depth}
    before = {n for n, _ in model.named_parameters()}
    model.requires_grad_(name == "full-ft")
    applied = TwoTowerApplied(name, opts, model)
    if name in ("mwa", "nke", "lora"):
        layers = resolve_tower_layers(opts["layers"], depths)
        opts["layers"] = layers
        applied.layers = layers  # type: ignore[assignment]
        if name == "lora":
            _inject_lora(model, layers, opts)
        else:
            _inject_mwa(model, layers, opts, with_ae=name == "mwa")
        applied.new_param_names = {n for n, _ in model.named_parameters()} - before
        for n, p in model.named_parameters():
            p.requires_grad = n in applied.new_param_names
        train_scale = bool(opts["train_logit_scale"])
        model.logit_scale.requires_grad = train_scale
        if model.logit_bias is not None:
            model.logit_bias.requires_grad = train_scale
        for head in model.head_modules():
            head.requires_grad_(bool(opts["train_heads"]))
    return applied


def _inject_mwa(model, layers: dict[str, list[int]], opts: dict[str, Any], with_ae: bool) -> None:
    cfg = model.config
    dims = {"vision": cfg.vision_width, "text": cfg.text_width}
    if opts["rank"] == "auto":
        opts["rank"] = auto_rank(max(dims.values()))
    rank = int(opts["rank"])
    device = model.logit_scale.device
    pairs = pair_layers(cfg.vision_depth, cfg.text_depth)
    ae_of: dict[tuple[str, int], nn.Module] = {}
    if with_ae:
        chosen = [p for p, (v, t) in enumerate(pairs) if v in layers["vision"] or t in layers["text"]]
        if opts["ae_width"] == "auto":
            opts["ae_width"] = auto_ae_width_two_tower(model, layers, rank, len(chosen))
        elif opts["ae_width"] == "ffn":
            opts["ae_width"] = cfg.vision_ffn if dims["vision"] == dims["text"] else min(cfg.vision_ffn, cfg.text_ffn)
        width, zero = int(opts["ae_width"]), bool(opts["ae_zero_init"])
        container = nn.ModuleDict()
        for p in chosen:
            ae = (AlignmentEnhancer(dims["vision"], width, cfg.layernorm_eps, zero) if dims["vision"] == dims["text"]
                  else SharedCoreAE(dims, width, cfg.layernorm_eps, zero))
            container[str(p)] = ae
            v, t = pairs[p]
            ae_of[("vision", v)] = ae
            ae_of[("text", t)] = ae
        model.add_module(AE_CONTAINER, container.to(device))
    for tower, tower_layers in model.towers.items():
        for i in layers[tower]:
            nke = Bottleneck(dims[tower], rank, float(opts["scale"]), float(opts["dropout"]))
            adapter = TowerLayerAdapter(tower, nke, ae_of.get((tower, i))).to(device)
            adapter.attach(tower_layers[i])


def _inject_lora(model, layers: dict[str, list[int]], opts: dict[str, Any]) -> None:
    device = model.logit_scale.device
    for tower, tower_layers in model.towers.items():
        for i in layers[tower]:
            attn = tower_layers[i].self_attn
            for target in opts["targets"]:
                linear = getattr(attn, target)
                lora = LoRA(linear.in_features, linear.out_features, int(opts["rank"]), float(opts["alpha"]),
                            float(opts["dropout"])).to(device)
                linear.add_module("lora", lora)
                linear.register_forward_hook(_lora_hook)


__all__ = ["TwoTowerApplied", "SharedCoreAE", "apply_two_tower", "pair_layers", "tower_layer_id",
           "ae_pair_params"]
