"""All-gathers across ranks: embeddings with gradients (every rank's embeddings become negatives of every other
rank's rows) and pair group ids without, and the `Gather` the loss takes for them. Identity in a single process."""

from __future__ import annotations

import torch

from mwa_cli.train.dist.context import get
from mwa_cli.train.loss import LOCAL, Gather


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


class RankGather(Gather):
    """The loss's gather under DDP: this rank's rows against all ranks' embeddings and group ids."""

    local = False

    def __init__(self) -> None:
        self.rank = get().rank

    def embeddings(self, t: torch.Tensor) -> torch.Tensor:
        return all_gather_with_grad(t)

    def groups(self, g: torch.Tensor) -> torch.Tensor:
        return gather_groups(g)


def rank_gather() -> Gather:
    """The gather of this process: every rank's embeddings when started by torchrun, else the identity."""
    return RankGather() if get().enabled else LOCAL
