"""The feature cache over several ranks: each rank runs the frozen layers on every W-th chunk of the train split and
the ranks swap their chunks, so every rank holds the whole cache after computing 1/W of it.

Why the whole cache on every rank, not a shard per rank: the global batch of a step is split by rows
(`sharding.shard_slice`), so any pair may land on any rank in any epoch; a per-rank shard would need a second
exchange every step, or a sampler that changes which pairs meet as negatives. The chunks are the single
process's chunks (same boundaries, same batch), so the cache is the one a single process fills.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from mwa_cli.train.dist.context import DistContext

LOCATIONS = ("gpu", "ram", "disk")  # most to least memory-hungry on the device

Compute = Callable[[int, int], Tensor]  # rows [lo, hi) -> their hidden states


def fill_rows(store: Tensor, n: int, batch_size: int, compute: Compute, done: Callable[[int], None]) -> None:
    """One process: ``store[lo:hi] = compute(lo, hi)`` chunk by chunk; ``done(rows)`` after each."""
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        store[lo:hi] = compute(lo, hi).to(store.dtype).to(store.device)
        done(hi - lo)


class CacheShare:
    """How the ranks of `ctx` fill one cache together (world size 1: exactly `fill_rows`)."""

    def __init__(self, ctx: DistContext):
        self.ctx = ctx

    def location(self, chosen: str) -> str:
        """Every rank's storage: the least memory-hungry of the ranks' choices (one short of memory decides)."""
        if not self.ctx.enabled:
            return chosen
        t = torch.tensor([LOCATIONS.index(chosen)], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=self.ctx.ctl)
        return LOCATIONS[int(t.item())]

    def file_tag(self) -> str:
        """Suffix of this rank's cache files (ranks share the run folder; rank 0 keeps the plain names)."""
        return f"-rank{self.ctx.rank}" if self.ctx.rank else ""

    def fill(self, store: Tensor, n: int, batch_size: int, compute: Compute, done: Callable[[int], None]) -> None:
        """``store[lo:hi] = compute(lo, hi)`` for every chunk; this rank computes chunks rank, rank+W, ..."""
        world, rank = self.ctx.world_size, self.ctx.rank
        if world <= 1:
            fill_rows(store, n, batch_size, compute, done)
            return
        for group in range(0, n, batch_size * world):
            lo = group + rank * batch_size
            hi = min(lo + batch_size, n)
            mine = compute(lo, hi).to(store.dtype) if lo < hi else None
            for q, part in enumerate(self._swap(mine, store.dtype)):
                start = group + q * batch_size
                if part is not None:
                    store[start:start + len(part)] = part.to(store.device)
                    done(len(part))

    def _swap(self, mine: Tensor | None, dtype: torch.dtype) -> list[Tensor | None]:
        """Every rank's chunk (None where a rank had none). Chunks are padded to one shape for the all-gather on the
        training group (device tensors: NCCL on GPUs, gloo on the CPU)."""
        shapes: list = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(shapes, None if mine is None else tuple(mine.shape), group=self.ctx.ctl)
        known = [s for s in shapes if s is not None]
        full = tuple(max(dims) for dims in zip(*known))
        device = mine.device if mine is not None else self.ctx.device
        padded = torch.zeros(full, dtype=dtype, device=device)
        if mine is not None:
            padded[tuple(slice(0, d) for d in mine.shape)] = mine
        parts = [torch.empty_like(padded) for _ in shapes]
        torch.distributed.all_gather(parts, padded)
        return [None if s is None else p[tuple(slice(0, d) for d in s)] for p, s in zip(parts, shapes)]
