"""AdamW with layer-wise lr decay and no weight decay on biases / 1-D params / logit_scale (BEiT-3 recipe).

The method registry (`AppliedMethod.param_groups`) is the normal source of groups; `layer_decay_groups` is the
same rule written out for any module (used when a method gives no groups, and by tests):
a parameter named `...layers.j....` gets layer id j+1, anything with "embed" in its name gets 0, everything
else (heads, logit_scale) gets L+1; its lr scale is `layer_decay ** (L + 1 - id)`.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
NO_DECAY_NAMES = ("logit_scale", "cls_token", "embed_positions", "pos_embed")


def layer_id_for(name: str, depth: int) -> int:
    """Layer id of a parameter name under BEiT-3's rule (0 = embeddings, j+1 = layer j, depth+1 = the rest)."""
    m = _LAYER_RE.search(name)
    if m:
        return int(m.group(1)) + 1
    if "embed" in name:
        return 0
    return depth + 1


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_NAMES)


def layer_decay_groups(model: torch.nn.Module, lr: float, weight_decay: float, layer_decay: float,
                       depth: int) -> list[dict]:
    """Param groups for `torch.optim.AdamW` over the trainable (requires_grad) parameters of `model`."""
    groups: "OrderedDict[tuple[int, bool], dict]" = OrderedDict()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid = layer_id_for(name, depth)
        nd = no_weight_decay(name, param)
        key = (lid, nd)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - lid)
            groups[key] = {"params": [], "names": [], "lr": lr * scale, "lr_scale": scale,
                           "weight_decay": 0.0 if nd else weight_decay}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return list(groups.values())


def build_optimizer(param_groups: list[dict], device: torch.device, *, betas=(0.9, 0.999),
                    eps: float = 1e-8) -> torch.optim.Optimizer | None:
    """AdamW (fused on CUDA). Returns None when nothing is trainable (the `frozen` method)."""
    groups = []
    for g in param_groups:
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        clean = {k: v for k, v in g.items() if k not in ("params", "names")}
        clean.setdefault("lr_scale", 1.0)
        clean["params"] = params
        groups.append(clean)
    if not groups:
        return None
    kwargs = {"betas": betas, "eps": eps}
    if device.type == "cuda":
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], **kwargs)
