"""AdamW over the parameter groups a method gives (`AppliedMethod.param_groups`: layer-wise lr decay and no
weight decay on biases / 1-D params / logit_scale, the BEiT-3 recipe)."""

from __future__ import annotations

import torch


def build_optimizer(param_groups: list[dict], device: torch.device, *, betas=(0.9, 0.999),
                    eps: float = 1e-8, capturable: bool = False) -> torch.optim.Optimizer | None:
    """AdamW (fused on CUDA). Returns None when nothing is trainable (the `frozen` method).

    `capturable` (CUDA): the update can be captured in a CUDA graph (step counts and learning rates on the device,
    see make_capturable)."""
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
    optimizer = torch.optim.AdamW(groups, lr=groups[0]["lr"], **kwargs)
    if capturable:
        make_capturable(optimizer, device)
    return optimizer


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Put what a CUDA-graph update reads on the device: each group's lr as a 0-d tensor (the schedule fills it in
    place; a float would be frozen into the graph) and the step counts; also after loading a checkpoint."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
    for state in optimizer.state.values():
        step = state.get("step")
        if isinstance(step, torch.Tensor) and step.device != device:
            state["step"] = step.to(device=device, dtype=torch.float32)
