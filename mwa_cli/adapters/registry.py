"""Training methods as a registry: what each one adds to the backbone, freezes and trains.

``apply_method(model, name, options)`` injects the method's modules (MWA/NKE as each layer's ``mwa`` child, LoRA
through forward hooks on the projections; the backbone code knows no method), sets ``requires_grad`` and returns
an ``AppliedMethod`` that gives the optimiser's parameter groups and the parameter accounting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from mwa_cli.adapters.alignment import AlignmentEnhancer
from mwa_cli.adapters.layers import select_layers
from mwa_cli.adapters.lora import LoRA
from mwa_cli.adapters.nke import NKE
from mwa_cli.errors import ConfigError
from mwa_cli.models.beit3 import BEiT3Retrieval, EncoderLayer

METHODS = ("mwa", "nke", "lora", "full-ft", "frozen")
PARAM_BUDGET = 0.03  # NKE + AE of the default MWA stay within 3 % of the backbone
WIDTH_STEP = 16

_HEAD_OPTIONS = {"train_heads": False, "train_logit_scale": True}
DEFAULTS: dict[str, dict[str, Any]] = {
    "mwa": {"layers": "all", "rank": "auto", "scale": 0.1, "dropout": 0.1, "ae_width": "auto",
            "ae_zero_init": True, **_HEAD_OPTIONS},
    "nke": {"layers": "all", "rank": "auto", "scale": 0.1, "dropout": 0.1, **_HEAD_OPTIONS},
    "lora": {"layers": "all", "rank": 8, "alpha": 16.0, "dropout": 0.05, "targets": ["q_proj", "v_proj"],
             **_HEAD_OPTIONS},
    "full-ft": {},
    "frozen": {},
}
# Option presets: "paper-code" reproduces the official repository (full-width, non-zero-init AE).
PRESETS: dict[str, dict[str, Any]] = {
    "paper-code": {"rank": 64, "scale": 0.1, "ae_width": "ffn", "ae_zero_init": False},
}
NO_DECAY_NAMES = {"logit_scale", "beit3.vision_embed.cls_token", "beit3.encoder.embed_positions.A.weight"}
_LAYER_RE = re.compile(r"beit3\.encoder\.layers\.(\d+)\.")


def auto_rank(dim: int) -> int:
    """Bottleneck width: the paper's 64 at width 768 and above, d/12 (min 8) for smaller backbones."""
    return max(8, min(64, dim // 12))


def nke_params(dim: int, rank: int) -> int:
    return 2 * (2 * dim * rank + rank + dim)


def ae_params(dim: int, width: int) -> int:
    return 2 * dim * width + 3 * width + dim


def auto_ae_width(model: BEiT3Retrieval, n_layers: int, rank: int) -> int:
    """Largest multiple of 16 that keeps NKE + AE within PARAM_BUDGET of the backbone (at least 16)."""
    d = model.config.embed_dim
    budget = PARAM_BUDGET * sum(p.numel() for p in model.parameters()) - n_layers * nke_params(d, rank)
    width = int(budget / n_layers - d) // (2 * d + 3) if n_layers else 0
    return max(WIDTH_STEP, width // WIDTH_STEP * WIDTH_STEP)


def layer_id(name: str, depth: int) -> int:
    """BEiT-3's layer-decay id: embeddings 0, ``layers.j`` j+1, everything else depth+1."""
    match = _LAYER_RE.match(name)
    if match:
        return int(match.group(1)) + 1
    if "embed" in name or name.endswith(("cls_token", "mask_token")):
        return 0
    return depth + 1


class LayerAdapter(nn.Module):
    """MWA/NKE modules of one layer, called by the layer with its post-attention state ``h`` and output."""

    def __init__(self, nke: NKE | None, ae: AlignmentEnhancer | None):
        super().__init__()
        self.nke = nke
        self.ae = ae

    def attach(self, layer: EncoderLayer) -> None:
        """Become the layer's ``mwa`` child (EncoderLayer's extension point; the parameter names follow)."""
        layer.add_module("mwa", self)

    def forward(self, h: Tensor, out: Tensor, split: int, drop_path: nn.Module) -> Tensor:
        if self.nke is not None:
            out = out + self.nke(h, split)
        if self.ae is not None:
            out = out + drop_path(self.ae(out))
        return out


def _lora_hook(linear: nn.Module, args: tuple, out: Tensor) -> Tensor:
    return out + linear.lora(args[0])


@dataclass
class AppliedMethod:
    """A method applied to a model: its resolved options, new modules and parameter accounting."""

    name: str
    options: dict[str, Any]
    model: BEiT3Retrieval
    layers: list[int] = field(default_factory=list)
    new_param_names: set[str] = field(default_factory=set)
    lr_scales: dict[str, float] = field(default_factory=dict)  # per new parameter (vocabulary extension)

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def trainable_params(self) -> int:
        return sum(p.numel() for _, p in self.trainable_named_parameters())

    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def added_params(self) -> int:
        """Parameters the method added to the backbone."""
        return sum(p.numel() for n, p in self.model.named_parameters() if n in self.new_param_names)

    def summary(self) -> str:
        """PEFT-style ``trainable params: X || all params: Y || trainable%: Z``."""
        t, a = self.trainable_params(), self.total_params()
        return f"trainable params: {t:,} || all params: {a:,} || trainable%: {100 * t / a:.4f}"

    @property
    def lowest_trainable_layer(self) -> int:
        """Index of the lowest layer with a trainable parameter (0 if embeddings train, depth if none)."""
        depth = self.model.config.depth
        ids = [layer_id(n, depth) for n, _ in self.trainable_named_parameters()]
        return max(0, min(ids, default=depth + 1) - 1) if ids else depth

    def decay_scale(self, name: str, layer_decay: float) -> float:
        """Layer-wise lr scale of a pretrained backbone weight (BEiT-3's rule)."""
        depth = self.model.config.depth
        return layer_decay ** (depth + 1 - layer_id(name, depth))

    def no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        return param.ndim <= 1 or name.endswith(".bias") or name in NO_DECAY_NAMES

    def param_groups(self, lr: float, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: no decay on biases, norms, logit_scale, cls token and positions; layer-wise lr decay
        on pretrained backbone weights (new weights train at the full rate, or their own ``lr_scales``)."""
        groups: dict[tuple[float, bool], dict[str, Any]] = {}
        for name, param in self.trainable_named_parameters():
            scale = (self.lr_scales.get(name, 1.0) if name in self.new_param_names
                     else self.decay_scale(name, layer_decay))
            no_decay = self.no_weight_decay(name, param)
            group = groups.setdefault((scale, no_decay), {
                "params": [], "names": [], "lr_scale": scale, "lr": lr * scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            })
            group["params"].append(param)
            group["names"].append(name)
        return list(groups.values())


def parameter_row(model: nn.Module, method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply ``method`` to a fresh ``model`` and account for it: backbone, added and trainable parameters."""
    backbone = sum(p.numel() for p in model.parameters())
    applied = apply_method(model, method, options)
    shown = {k: v for k, v in applied.options.items() if k in ("rank", "ae_width", "preset")}
    if options and "layers" in options:
        shown["layers"] = options["layers"]
    return {"method": method, "options": shown, "backbone": backbone, "added": applied.added_params(),
            "trainable": applied.trainable_params(), "total": applied.total_params()}


def markdown_row(name: str, row: dict[str, Any]) -> str:
    """One line of docs/parameters.md."""
    return (f"| {name} | {row['method']} | {row['options'] or ''} | {row['backbone']:,} | {row['added']:,} | "
            f"{100 * row['added'] / row['backbone']:.2f} | {row['trainable']:,} | "
            f"{100 * row['trainable'] / row['total']:.2f} |")


def resolve_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults, then a preset (``options["preset"]``), then the user's options; unknown keys refused."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}", hint=f"choose one of {', '.join(METHODS)}")
    opts = dict(options or {})
    preset = opts.pop("preset", None)
    resolved = dict(DEFAULTS[name])
    if preset is not None:
        if name != "mwa" or preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r} for method {name}",
                              hint=f"mwa presets: {', '.join(PRESETS)}")
        resolved.update(PRESETS[preset])
        resolved["preset"] = preset
    unknown = sorted(set(opts) - set(resolved))
    if unknown:
        raise ConfigError(f"unknown options for method {name}: {', '.join(unknown)}",
                          hint=f"accepted: {', '.join(sorted(resolved)) or 'none'}")
    resolved.update(opts)
    return resolved


def apply_method(model: BEiT3Retrieval, name: str, options: dict[str, Any] | None = None) -> AppliedMethod:
    """Inject method ``name`` into ``model`` and set what trains. The model must not carry a method yet."""
    if getattr(model, "blip2", False):  # BLIP-2 retrieval: ViT + Q-Former (mwa_cli.models.blip2)
        from mwa_cli.adapters.blip2 import apply_blip2

        return apply_blip2(model, name, options)
    if getattr(model, "two_tower", False):  # Hugging Face CLIP / SigLIP (mwa_cli.models.hf)
        from mwa_cli.adapters.two_tower import apply_two_tower

        return apply_two_tower(model, name, options)
    opts = resolve_options(name, options)
    cfg = model.config
    before = {n for n, _ in model.named_parameters()}
    model.requires_grad_(name == "full-ft")
    applied = AppliedMethod(name, opts, model)
    if name in ("mwa", "nke", "lora"):
        applied.layers = select_layers(opts["layers"], cfg.depth)
        opts["layers"] = applied.layers
        if name == "lora":
            _inject_lora(model, applied.layers, opts)
        else:
            _inject_mwa(model, applied.layers, opts, with_ae=name == "mwa")
        applied.new_param_names = {n for n, _ in model.named_parameters()} - before
        for n, p in model.named_parameters():
            p.requires_grad = n in applied.new_param_names
        model.logit_scale.requires_grad = bool(opts["train_logit_scale"])
        model.vision_head.requires_grad_(bool(opts["train_heads"]))
        model.language_head.requires_grad_(bool(opts["train_heads"]))
    return applied


def _inject_mwa(model: BEiT3Retrieval, layers: list[int], opts: dict[str, Any], with_ae: bool) -> None:
    cfg = model.config
    if opts["rank"] == "auto":
        opts["rank"] = auto_rank(cfg.embed_dim)
    if with_ae:
        if opts["ae_width"] == "auto":
            opts["ae_width"] = auto_ae_width(model, len(layers), int(opts["rank"]))
        elif opts["ae_width"] == "ffn":
            opts["ae_width"] = cfg.ffn_dim
    device = model.logit_scale.device
    for i in layers:
        nke = NKE(cfg.embed_dim, int(opts["rank"]), float(opts["scale"]), float(opts["dropout"]))
        ae = (AlignmentEnhancer(cfg.embed_dim, int(opts["ae_width"]), cfg.layernorm_eps, bool(opts["ae_zero_init"]))
              if with_ae else None)
        adapter = LayerAdapter(nke, ae).to(device)
        adapter.attach(model.layers[i])


def _inject_lora(model: BEiT3Retrieval, layers: list[int], opts: dict[str, Any]) -> None:
    device = model.logit_scale.device
    for i in layers:
        attn = model.layers[i].self_attn
        for target in opts["targets"]:
            for expert in ("A", "B"):
                linear = getattr(getattr(attn, target), expert)
                lora = LoRA(linear.in_features, linear.out_features, int(opts["rank"]), float(opts["alpha"]),
                            float(opts["dropout"])).to(device)
                linear.add_module("lora", lora)
                linear.register_forward_hook(_lora_hook)
