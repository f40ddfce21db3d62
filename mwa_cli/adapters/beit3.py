"""The BEiT-3 backbone family (``mwa_cli.models.beit3.BEiT3Retrieval``), as methods see it: layer selection,
parameter accounting and the head switches. Methods inject through ``inject_beit3`` (``adapters.methods``)."""

from __future__ import annotations

from typing import Any

from mwa_cli.adapters.applied import AppliedMethod
from mwa_cli.adapters.layers import select_layers


class Beit3Family:
    """One Multiway layer stack: a layer selection is a list of indices."""

    key = "beit3"
    title = "BEiT-3"
    Applied = AppliedMethod

    @staticmethod
    def select_layers(spec: Any, model) -> list[int]:
        return select_layers(spec, model.config.depth)

    @staticmethod
    def set_head_training(model, heads: bool, logit_scale: bool) -> None:
        model.logit_scale.requires_grad = logit_scale
        model.vision_head.requires_grad_(heads)
        model.language_head.requires_grad_(heads)


FAMILY = Beit3Family()
