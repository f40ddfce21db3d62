"""AdamW over the parameter groups a method gives (`AppliedMethod.param_groups`: layer-wise lr decay and no
weight decay on biases / 1-D params / logit_scale, the BEiT-3 recipe)."""

from __future__ import annotations

import torch

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
