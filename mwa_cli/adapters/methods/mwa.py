"""MultiWay-Adapter: NKE (a bottleneck per modality, parallel to each FFN) + AE (one block per layer shared by
both modalities, after the FFN), on a frozen backbone (docs/decisions.md, "Model core").

* **BEiT-3**: each adapted layer gets a ``LayerAdapter`` as its ``mwa`` child, NKE per Multiway expert.
* **Two towers** (CLIP, SigLIP): NKE per tower layer, the AE shared by a pair of layers (``pair_layers``): a plain
  AE for equal widths, ``SharedCoreAE`` for different ones; the deeper tower's unpaired layers get NKE only.
* **BLIP-2**: NKE in the ViT blocks; in the Q-Former NKE per stream and one AE shared by both streams.

All adapters start at zero output (unless ``ae_zero_init`` is off), so the adapted model equals the pretrained
one at step 0. ``rank`` and ``ae_width`` ``auto`` keep NKE + AE within ``PARAM_BUDGET`` of the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from mwa_cli.adapters.layers import check_layer_spec
from mwa_cli.adapters.methods.base import AdapterMethod, LayerSpec, MethodConfig
from mwa_cli.ranges import Range

PARAM_BUDGET = 0.03  # NKE + AE of the default MWA stay within 3 % of the backbone
WIDTH_STEP = 16
AE_CONTAINER = "mwa_ae"  # two towers: the shared AEs live in model.mwa_ae.<pair>
WIDTH = Range(1, 65536, whole=True)  # a bottleneck or AE width
# the numeric options NKE shares with MWA
ADAPTER_RANGES = {"rank": WIDTH, "scale": Range(0, 100), "dropout": Range(0, 1, hi_open=True)}


@dataclass
class MWAConfig(MethodConfig):
    layers: LayerSpec = "all"
    rank: int | Literal["auto"] = "auto"  # NKE bottleneck; auto_rank
    scale: float = 0.1
    dropout: float = 0.1
    ae_width: int | Literal["auto", "ffn"] = "auto"  # ffn: the backbone's FFN width (the official code)
    ae_zero_init: bool = True
    train_heads: bool = False
    train_logit_scale: bool = True
    ranges: ClassVar[dict[str, Range]] = {**ADAPTER_RANGES, "ae_width": WIDTH}

    def check(self) -> None:
        check_adapter_options(self)


def check_adapter_options(config) -> None:
    """What the ranges cannot say about the options NKE shares with MWA: the layer selection."""
    check_layer_spec(config.layers)


def auto_rank(dim: int) -> int:
    """Bottleneck width: the paper's 64 at width 768 and above, d/12 (min 8) for smaller backbones."""
    return max(8, min(64, dim // 12))


def nke_params(dim: int, rank: int) -> int:
    """Parameters of BEiT-3's NKE in one layer (two experts)."""
    return 2 * nke_layer_params(dim, rank)


def nke_layer_params(dim: int, rank: int) -> int:
    """Parameters of one bottleneck."""
    return 2 * dim * rank + rank + dim


def ae_params(dim: int, width: int) -> int:
    return 2 * dim * width + 3 * width + dim


def ae_pair_params(dims: dict[str, int], width: int) -> int:
    """Parameters of one two-tower AE module (shared by a layer pair)."""
    dv, dt = dims["vision"], dims["text"]
    if dv == dt:
        return ae_params(dv, width)
    return sum(2 * d * width + width + d for d in (dv, dt)) + width * width + 3 * width


def _model_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def auto_ae_width(model, n_layers: int, rank: int) -> int:
    """BEiT-3: largest multiple of 16 that keeps NKE + AE within PARAM_BUDGET of the backbone (at least 16)."""
    d = model.config.embed_dim
    budget = PARAM_BUDGET * _model_params(model) - n_layers * nke_params(d, rank)
    width = int(budget / n_layers - d) // (2 * d + 3) if n_layers else 0
    return max(WIDTH_STEP, width // WIDTH_STEP * WIDTH_STEP)


def auto_ae_width_two_tower(model, layers: dict[str, list[int]], rank: int, n_ae: int) -> int:
    """Two towers: widest multiple of 16 keeping NKE + AE within PARAM_BUDGET of the backbone (at least 16)."""
    cfg = model.config
    dims = {"vision": cfg.vision_width, "text": cfg.text_width}
    budget = PARAM_BUDGET * _model_params(model) - sum(len(layers[t]) * nke_layer_params(dims[t], rank)
                                                       for t in ("vision", "text"))
    width = WIDTH_STEP
    while n_ae and n_ae * ae_pair_params(dims, width + WIDTH_STEP) <= budget:
        width += WIDTH_STEP
    return width


def auto_ae_width_blip2(model, layers: dict[str, list[int]], rank: int) -> int:
    """BLIP-2: widest multiple of 16 keeping NKE + AE within PARAM_BUDGET of the backbone (at least 16)."""
    cfg = model.config
    nke = (len(layers["vision"]) * nke_layer_params(cfg.vision_width, rank)
           + 2 * len(layers["qformer"]) * nke_layer_params(cfg.qformer_width, rank))
    n_ae = len(layers["qformer"])
    width = WIDTH_STEP
    while n_ae and n_ae * ae_params(cfg.qformer_width, width + WIDTH_STEP) <= PARAM_BUDGET * _model_params(model) - nke:
        width += WIDTH_STEP
    return width


class MWAMethod(AdapterMethod):
    name = "mwa"
    display_name = "MWA"
    Config = MWAConfig
    # "paper-code" reproduces the official repository (full-width, non-zero-init AE)
    presets = {"paper-code": {"rank": 64, "scale": 0.1, "ae_width": "ffn", "ae_zero_init": False}}
    # beit3-mini: chosen on sample_data's val split (bench/sweep_mini_recall.py, docs/benchmarks.md); BEiT-3 and
    # BLIP-2: not yet measured (no real weights in this workplace), the common PEFT practice of 5x full-ft's rate
    learning_rates = {"beit3-mini": 2e-2, "default": 1e-3, "blip2-itm-vit-g": 1e-3}
    # class-folder templates: 2e-2 collapsed every photo onto one label; 5e-3 chosen on that data's val split
    templated_learning_rates = {"beit3-mini": 5e-3}
    order = 0
    with_ae: ClassVar[bool] = True

    def inject_beit3(self, model, config: MWAConfig) -> None:
        from mwa_cli.adapters.modules.alignment import AlignmentEnhancer
        from mwa_cli.adapters.modules.bottleneck import NKE
        from mwa_cli.adapters.modules.layer_adapters import LayerAdapter

        cfg = model.config
        if config.rank == "auto":
            config.rank = auto_rank(cfg.embed_dim)
        if self.with_ae:
            if config.ae_width == "auto":
                config.ae_width = auto_ae_width(model, len(config.layers), config.rank)
            elif config.ae_width == "ffn":
                config.ae_width = cfg.ffn_dim
        device = model.logit_scale.device
        for i in config.layers:
            nke = NKE(cfg.embed_dim, config.rank, float(config.scale), float(config.dropout))
            ae = (AlignmentEnhancer(cfg.embed_dim, config.ae_width, cfg.layernorm_eps, config.ae_zero_init)
                  if self.with_ae else None)
            LayerAdapter(nke, ae).to(device).attach(model.layers[i])

    def inject_two_tower(self, model, config: MWAConfig) -> None:
        from torch import nn

        from mwa_cli.adapters.modules.alignment import AlignmentEnhancer, SharedCoreAE
        from mwa_cli.adapters.modules.bottleneck import Bottleneck
        from mwa_cli.adapters.modules.layer_adapters import TowerLayerAdapter
        from mwa_cli.adapters.two_tower import pair_layers

        cfg, layers = model.config, config.layers
        dims = {"vision": cfg.vision_width, "text": cfg.text_width}
        if config.rank == "auto":
            config.rank = auto_rank(max(dims.values()))
        device = model.logit_scale.device
        pairs = pair_layers(cfg.vision_depth, cfg.text_depth)
        ae_of: dict[tuple[str, int], nn.Module] = {}
        if self.with_ae:
            chosen = [p for p, (v, t) in enumerate(pairs) if v in layers["vision"] or t in layers["text"]]
            if config.ae_width == "auto":
                config.ae_width = auto_ae_width_two_tower(model, layers, config.rank, len(chosen))
            elif config.ae_width == "ffn":
                config.ae_width = (cfg.vision_ffn if dims["vision"] == dims["text"]
                                   else min(cfg.vision_ffn, cfg.text_ffn))
            container = nn.ModuleDict()
            for p in chosen:
                ae = (AlignmentEnhancer(dims["vision"], config.ae_width, cfg.layernorm_eps, config.ae_zero_init)
                      if dims["vision"] == dims["text"]
                      else SharedCoreAE(dims, config.ae_width, cfg.layernorm_eps, config.ae_zero_init))
                container[str(p)] = ae
                v, t = pairs[p]
                ae_of[("vision", v)] = ae
                ae_of[("text", t)] = ae
            model.add_module(AE_CONTAINER, container.to(device))
        for tower, tower_layers in model.towers.items():
            for i in layers[tower]:
                nke = Bottleneck(dims[tower], config.rank, float(config.scale), float(config.dropout))
                TowerLayerAdapter(tower, nke, ae_of.get((tower, i))).to(device).attach(tower_layers[i])

    def inject_blip2(self, model, config: MWAConfig) -> None:
        from mwa_cli.adapters.modules.alignment import AlignmentEnhancer
        from mwa_cli.adapters.modules.bottleneck import Bottleneck
        from mwa_cli.adapters.modules.layer_adapters import QFormerLayerAdapter, TowerLayerAdapter

        cfg, layers = model.config, config.layers
        if config.rank == "auto":
            config.rank = auto_rank(max(cfg.vision_width, cfg.qformer_width))
        rank, scale, dropout = config.rank, float(config.scale), float(config.dropout)
        if self.with_ae:
            if config.ae_width == "auto":
                config.ae_width = auto_ae_width_blip2(model, layers, rank)
            elif config.ae_width == "ffn":
                config.ae_width = cfg.qformer_ffn
        device = model.logit_scale.device
        towers = model.towers
        for i in layers["vision"]:
            adapter = TowerLayerAdapter("vision", Bottleneck(cfg.vision_width, rank, scale, dropout), None)
            adapter.to(device).attach(towers["vision"][i])
        d = cfg.qformer_width
        for i in layers["qformer"]:
            ae = (AlignmentEnhancer(d, config.ae_width, cfg.layernorm_eps, config.ae_zero_init)
                  if self.with_ae else None)
            adapter = QFormerLayerAdapter(Bottleneck(d, rank, scale, dropout), Bottleneck(d, rank, scale, dropout), ae)
            adapter.to(device).attach(towers["qformer"][i])


METHOD = MWAMethod()
