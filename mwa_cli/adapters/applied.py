"""A method applied to a model: what it added, what trains, and the optimiser's parameter groups.

``AppliedMethod`` follows BEiT-3's parameter names (layer-wise lr decay over ``beit3.encoder.layers.j``); the
two-tower and BLIP-2 families subclass it with their own layer rule (``adapters.two_tower``, ``adapters.blip2``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from mwa_cli.models.beit3 import BEiT3Retrieval

NO_DECAY_NAMES = {"logit_scale", "beit3.vision_embed.cls_token", "beit3.encoder.embed_positions.A.weight"}
_LAYER_RE = re.compile(r"beit3\.encoder\.layers\.(\d+)\.")


def layer_id(name: str, depth: int) -> int:
    """BEiT-3's layer-decay id: embeddings 0, ``layers.j`` j+1, everything else depth+1."""
    match = _LAYER_RE.match(name)
    if match:
        return int(match.group(1)) + 1
    if "embed" in name or name.endswith(("cls_token", "mask_token")):
        return 0
    return depth + 1


@dataclass
class AppliedMethod:
    """A method applied to a model: its resolved options, new modules and parameter accounting."""

    name: str
    options: dict[str, Any]
    model: BEiT3Retrieval
    layers: list[int] | dict[str, list[int]] = field(default_factory=list)  # per tower on two-tower families
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
