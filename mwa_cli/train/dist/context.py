"""The process groups of a distributed run and the one `DistContext` every module asks (`get()`): rank, world
size, device, and the control messages over a second gloo group. World size 1: a no-op context."""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from mwa_cli.errors import ConfigError
from mwa_cli.train.dist.env import env_world_size, under_torchrun
from mwa_cli.train.dist.sharding import shard_slice

LONG_WAIT = datetime.timedelta(hours=12)  # control group: ranks wait there while rank 0 evaluates / saves
# Training collectives (ranks in lockstep): a peer silent this long is stuck. On one machine the launcher ends a
# failed run within seconds; this bounds the wait under an external torchrun too (gloo's own default is 30 min).
STEP_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    ctl: Any = None  # gloo process group for control messages

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----------------------------------------------------------------- control messages (gloo, CPU)
    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier(group=self.ctl)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s `obj` on every rank (pickled through the gloo control group; waits as long as needed)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=src, group=self.ctl)
        return box[0]

    def agree(self, signum: int | None, main_flags: tuple = ()) -> tuple[int | None, tuple]:
        """One decision for every rank: the signal any rank received (largest number), and rank 0's `main_flags`
        (booleans: budget stop, time-based checkpoint...). One tiny CPU all-reduce, no GPU sync."""
        if not self.enabled:
            return signum, tuple(main_flags)
        t = torch.zeros(1 + len(main_flags), dtype=torch.float64)
        t[0] = float(signum or 0)
        if self.is_main:
            for i, v in enumerate(main_flags):
                t[1 + i] = float(bool(v))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=self.ctl)
        sig = int(t[0].item()) or None
        return sig, tuple(bool(v) for v in t[1:].tolist())

    def min_int(self, value: int) -> int:
        if not self.enabled:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN, group=self.ctl)
        return int(t.item())

    # ----------------------------------------------------------------- device tensors (default group)
    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of a device tensor over ranks (the loss shown is the global batch's loss)."""
        if not self.enabled:
            return t
        t = t.detach().clone()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t / self.world_size

    def shard_slice(self) -> slice:
        return shard_slice(self.rank, self.world_size)


_CTX = DistContext()


def get() -> DistContext:
    return _CTX


def is_main() -> bool:
    return _CTX.is_main


def init_from_env(device: torch.device) -> DistContext:
    """Start the process groups from torchrun's variables; world size 1 → nothing (returns the no-op context).

    On CUDA each process uses GPU LOCAL_RANK (of those visible), backend nccl; on CPU backend gloo.
    Idempotent: a second call returns the running context.
    """
    global _CTX
    if _CTX.enabled and torch.distributed.is_initialized():
        return _CTX
    world = env_world_size()
    if world <= 1 or not under_torchrun():
        _CTX = DistContext(device=torch.device(device))
        return _CTX
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device)
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise ConfigError(f"process {rank} has local rank {local_rank} but only {n} GPU(s) are visible",
                              hint="start at most one process per GPU (--nproc-per-node ≤ the GPU count)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    kwargs: dict = {"backend": backend, "timeout": STEP_TIMEOUT}
    if backend == "nccl":
        kwargs["device_id"] = device  # eager NCCL init, bound to this GPU
    try:
        torch.distributed.init_process_group(**kwargs)
    except TypeError:  # older torch without device_id
        kwargs.pop("device_id", None)
        torch.distributed.init_process_group(**kwargs)
    ctl = torch.distributed.new_group(backend="gloo", timeout=LONG_WAIT)
    _CTX = DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=device, ctl=ctl)
    atexit.register(teardown)
    return _CTX


def teardown() -> None:
    """Destroy the process groups (safe to call twice, and in a single process)."""
    global _CTX
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    _CTX = DistContext(device=_CTX.device)


def reseed_rank(seed: int, step: int) -> None:
    """Ranks > 0 draw their own dropout / drop-path masks, seeded before every step from (seed, rank, step): a
    run is reproducible for a given world size, and a resumed run draws what the uninterrupted one drew (their RNG
    states are not in the checkpoint). Rank 0 keeps the single-process RNG stream (restored on resume)."""
    if _CTX.enabled and not _CTX.is_main:
        torch.manual_seed((int(seed) * 1_000_003 + _CTX.rank * 7_919 + int(step) * 104_729 + 17) % (2**63 - 1))
