"""The two-tower backbone family (``mwa_cli.models.hf.HFDualEncoder``: CLIP, SigLIP), as methods see it.

Layer selection applies to each tower (``{"vision": [...], "text": [...]}``), layer-wise lr decay follows each
tower's own depth, and ``pair_layers`` pairs the layers of towers of different depths (MWA's shared AE). How each
method maps onto the towers is in its module (``inject_two_tower`` in ``adapters.methods``; docs/decisions.md,
"Hugging Face backbones").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from mwa_cli.adapters.applied import AppliedMethod
from mwa_cli.adapters.layers import select_layers

TOWERS = ("vision", "text")
NO_DECAY_KEYS = ("logit_scale", "logit_bias", "position_embedding", "class_embedding", "probe")
_LAYER_RE = re.compile(r"^hf\.(vision|text)_model\.encoder\.layers\.(\d+)\.")


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


# ============================================================================ family
class TwoTowerFamily:
    """Two towers of their own depths and widths; the tower plays the Multiway expert's role."""

    key = "two_tower"
    title = "two-tower (CLIP/SigLIP)"
    Applied = TwoTowerApplied

    @staticmethod
    def select_layers(spec: Any, model) -> dict[str, list[int]]:
        cfg = model.config
        return resolve_tower_layers(spec, {"vision": cfg.vision_depth, "text": cfg.text_depth})

    @staticmethod
    def set_head_training(model, heads: bool, logit_scale: bool) -> None:
        model.logit_scale.requires_grad = logit_scale
        if model.logit_bias is not None:
            model.logit_bias.requires_grad = logit_scale
        for head in model.head_modules():
            head.requires_grad_(heads)


FAMILY = TwoTowerFamily()
