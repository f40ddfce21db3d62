"""The BLIP-2 backbone family (``mwa_cli.models.blip2.Blip2Retrieval``: ViT + Q-Former), as methods see it.

Layer selection applies to the ViT and the Q-Former (``{"vision": [...], "qformer": [...]}``); layer-wise lr
decay follows LAVIS's BLIP-2: ViT blocks decay with depth, the Q-Former, the query tokens and the projections
train at the full rate. How each method maps onto the ViT and the Q-Former's two streams is in its module
(``inject_blip2`` in ``adapters.methods``; docs/decisions.md, "BLIP-2").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from mwa_cli.adapters.layers import select_layers
from mwa_cli.adapters.two_tower import TwoTowerApplied
from mwa_cli.errors import ConfigError

TOWERS = ("vision", "qformer")


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


class Blip2Family:
    """A ViT (images only) feeding a Q-Former whose query and text streams act as Multiway experts."""

    key = "blip2"
    title = "BLIP-2"
    Applied = Blip2Applied

    @staticmethod
    def select_layers(spec: Any, model) -> dict[str, list[int]]:
        return resolve_blip2_layers(spec, model.config)

    @staticmethod
    def set_head_training(model, heads: bool, logit_scale: bool) -> None:
        model.logit_scale.requires_grad = logit_scale
        for head in model.head_modules():
            head.requires_grad_(heads)


FAMILY = Blip2Family()
