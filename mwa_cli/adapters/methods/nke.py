"""NKE alone: MultiWay-Adapter without the Alignment Enhancer (the paper's ablation), injected as MWA's NKE in
every backbone family (``methods.mwa``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from mwa_cli.adapters.methods.base import LayerSpec, MethodConfig
from mwa_cli.adapters.methods.mwa import ADAPTER_RANGES, MWAMethod, check_adapter_options
from mwa_cli.ranges import Range


@dataclass
class NKEConfig(MethodConfig):
    layers: LayerSpec = "all"
    rank: int | Literal["auto"] = "auto"
    scale: float = 0.1
    dropout: float = 0.1
    train_heads: bool = False
    train_logit_scale: bool = True
    ranges: ClassVar[dict[str, Range]] = ADAPTER_RANGES

    def check(self) -> None:
        check_adapter_options(self)


class NKEMethod(MWAMethod):
    name = "nke"
    display_name = "NKE"
    Config = NKEConfig
    presets = {}
    # beit3-mini: chosen on sample_data's val split (bench/sweep_mini_recall.py); others: not yet measured
    learning_rates = {"beit3-mini": 1e-2, "default": 1e-3, "blip2-itm-vit-g": 1e-3}
    order = 10
    with_ae = False


METHOD = NKEMethod()
