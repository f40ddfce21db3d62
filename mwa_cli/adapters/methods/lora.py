"""LoRA on the attention projections (default ``q_proj`` and ``v_proj``), through forward hooks.

* **BEiT-3**: on both Multiway experts (``A`` vision, ``B`` language) of each target projection.
* **Two towers**: on the target projections of both towers.
* **BLIP-2**: the targets are the q/k/v slices of the ViT's fused ``qkv`` (``FusedQKVLoRA``) and the Q-Former
  self-attention's ``query`` / ``key`` / ``value``; ``out_proj`` has no counterpart there and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mwa_cli.adapters.layers import check_layer_spec
from mwa_cli.adapters.methods.base import AdapterMethod, LayerSpec, MethodConfig
from mwa_cli.errors import ConfigError
from mwa_cli.ranges import Range

TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")  # attention projections of BEiT-3 and the HF towers
QKV_SLICES = {"q_proj": 0, "k_proj": 1, "v_proj": 2}  # BLIP-2: LoRA target -> slice of the ViT's fused qkv
QFORMER_TARGETS = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}


@dataclass
class LoRAConfig(MethodConfig):
    layers: LayerSpec = "all"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    train_heads: bool = False
    train_logit_scale: bool = True
    ranges: ClassVar[dict[str, Range]] = {"rank": Range(1, 65536, whole=True), "alpha": Range(0, 1e4, lo_open=True),
                                          "dropout": Range(0, 1, hi_open=True)}

    def check(self) -> None:
        check_layer_spec(self.layers)
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown or not self.targets:
            raise ConfigError(f"unknown LoRA targets {unknown or self.targets}",
                              hint=f'choose from {", ".join(TARGETS)}, e.g. --option \'targets=["q_proj","v_proj"]\'')


class LoRAMethod(AdapterMethod):
    name = "lora"
    display_name = "LoRA"
    Config = LoRAConfig
    # beit3-mini: chosen on sample_data's val split (bench/sweep_mini_recall.py); others: not yet measured
    learning_rates = {"beit3-mini": 5e-3, "default": 1e-3, "blip2-itm-vit-g": 1e-3}
    order = 20

    def inject_beit3(self, model, config: LoRAConfig) -> None:
        from mwa_cli.adapters.modules.lora import LoRA, attach_lora

        device = model.logit_scale.device
        for i in config.layers:
            attn = model.layers[i].self_attn
            for target in config.targets:
                for expert in ("A", "B"):
                    linear = getattr(getattr(attn, target), expert)
                    attach_lora(linear, LoRA(linear.in_features, linear.out_features, config.rank,
                                             float(config.alpha), float(config.dropout)).to(device))

    def inject_two_tower(self, model, config: LoRAConfig) -> None:
        from mwa_cli.adapters.modules.lora import LoRA, attach_lora

        device = model.logit_scale.device
        for tower, tower_layers in model.towers.items():
            for i in config.layers[tower]:
                attn = tower_layers[i].self_attn
                for target in config.targets:
                    linear = getattr(attn, target)
                    attach_lora(linear, LoRA(linear.in_features, linear.out_features, config.rank,
                                             float(config.alpha), float(config.dropout)).to(device))

    def inject_blip2(self, model, config: LoRAConfig) -> None:
        from mwa_cli.adapters.modules.lora import FusedQKVLoRA, LoRA, attach_lora

        unknown = sorted(set(config.targets) - set(QKV_SLICES))
        if unknown:
            raise ConfigError(f"unknown LoRA targets {unknown} for BLIP-2", hint=f"choose from {', '.join(QKV_SLICES)}")
        rank, alpha, dropout = config.rank, float(config.alpha), float(config.dropout)
        device = model.logit_scale.device
        towers = model.towers
        for i in config.layers["vision"]:
            qkv = towers["vision"][i].self_attn.qkv
            lora = FusedQKVLoRA(qkv.in_features, [QKV_SLICES[t] for t in config.targets], rank, alpha, dropout)
            attach_lora(qkv, lora.to(device))
        for i in config.layers["qformer"]:
            attn = towers["qformer"][i].attention.attention
            for target in config.targets:
                linear = getattr(attn, QFORMER_TARGETS[target])
                attach_lora(linear, LoRA(linear.in_features, linear.out_features, rank, alpha, dropout).to(device))


METHOD = LoRAMethod()
