"""Each rank's share of a global batch: rank r of W takes rows r, r+W, r+2W, ... (every row once over all ranks)."""

from __future__ import annotations

import torch

from mwa_cli.errors import ConfigError


def shard_slice(rank: int, world: int) -> slice:
    """Rank-strided share of a global batch: rows rank, rank+world, ... (all ranks together: every row once)."""
    return slice(int(rank), None, int(world))


def shard_batch(batch: dict, rank: int, world: int) -> dict:
    """The rank's rows of every batched tensor of a global batch dict (non-tensors and 0-d tensors kept)."""
    if world <= 1:
        return batch
    sl = shard_slice(rank, world)
    return {k: (v[sl] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in batch.items()}


def check_batch_split(batch_size: int, world: int) -> None:
    if world > 1 and batch_size % world:
        raise ConfigError(f"the batch of {batch_size} cannot be split evenly over {world} devices",
                          hint=f"use a --batch-size that is a multiple of {world} (it is the global batch)")
