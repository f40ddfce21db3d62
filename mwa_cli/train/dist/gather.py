"""All-gathers across ranks: embeddings with gradients (every rank's embeddings become negatives of every other
rank's rows) and pair group ids without. Identity in a single process."""

from __future__ import annotations

import torch

from mwa_cli.train.dist.context import get


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenation of every rank's `t` (same shape on each) along dim 0, differentiable: the gradient of each
    rank's slice is the sum of the gradients all ranks computed for it (reduce-scatter)."""
    if not get().enabled:
        return t
    return _GatherWithGrad.apply(t.contiguous())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: the sum over ranks of the gathered tensor's gradient, this rank's rows (an
    all-reduce of a [G, D] embedding gradient: tiny, and available on every backend, gloo included)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(t) for _ in range(get().world_size)]
        torch.distributed.all_gather(parts, t)
        ctx.rows = (get().rank * t.shape[0], (get().rank + 1) * t.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad, op=torch.distributed.ReduceOp.SUM)
        return grad[ctx.rows[0]:ctx.rows[1]]


def gather_groups(groups: torch.Tensor) -> torch.Tensor:
    """Every rank's pair group ids (same length on each), concatenated in rank order; no gradient."""
    if not get().enabled:
        return groups
    parts = [torch.empty_like(groups) for _ in range(get().world_size)]
    torch.distributed.all_gather(parts, groups.contiguous())
    return torch.cat(parts, dim=0)
