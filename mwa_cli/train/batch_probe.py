"""The batch-size probe: `--batch-size auto` on CUDA takes the largest micro-batch whose training step fits.

`find_max_batch` searches with `largest_fitting` over `probe_fits` (one step's forward and backward while the
optimizer's moments are held); bench/max_batch_24g.py runs the same probe under a memory cap.
"""

from __future__ import annotations

from typing import Callable

import torch

from mwa_cli.errors import EXIT_OOM, MwaError
from mwa_cli.train.trainer import OOM_ERRORS, Trainer


def largest_fitting(fits: Callable[[int], bool], cap: int, *, start: int = 8, resolution: int | None = None) -> int:
    """The largest batch ≤ `cap` for which `fits(b)` holds, 0 when `start` (or `cap`, if smaller) does not: doubling
    from `start`, then, with `resolution`, bisection in multiples of it between the last fit and the first
    failure (without: the largest power-of-two multiple of `start`). Assumes what fits at b fits below it."""
    b = min(start, cap)
    best, failed = 0, None
    while True:
        if not fits(b):
            failed = b
            break
        best = b
        if b >= cap:
            break
        b = min(cap, 2 * b)
    if not resolution or best == 0 or failed is None:
        return best
    lo, hi = best, failed  # lo fits, hi does not
    while hi - lo > resolution:
        mid = lo + (hi - lo) // 2 // resolution * resolution
        if mid <= lo:
            break
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def probe_fits(trainer: Trainer, batch: int, text_len: int,
               inputs: Callable[[int], tuple[torch.Tensor, ...]] | None = None) -> bool:
    """Does one training step of `batch` random pairs fit in the device's memory? Forward and backward while
    stand-ins of the optimizer's moments are held (AdamW allocates them at its first step); the weights and the
    optimizer are untouched, the gradients cleared. `inputs(batch)` -> (pixels or image states, ids or text
    states, padding mask) on the device; default: random images and captions of `text_len` tokens."""
    ok = True
    standin = optimizer_standin(trainer)
    try:
        if inputs is None:
            data = trainer.random_batch(batch, text_len=text_len, seed=1)
            px, ids, mask = (trainer.pixels(data), data["input_ids"].to(trainer.device),
                             data["padding_mask"].to(trainer.device))
        else:
            px, ids, mask = inputs(batch)
        trainer._forward_backward(px, ids, mask)
        del px, ids, mask
        trainer.synchronize()
    except OOM_ERRORS:
        ok = False
    del standin
    _optimizer(trainer).zero_grad(set_to_none=True)
    if trainer.device.type == "cuda":
        torch.cuda.empty_cache()
    return ok


def optimizer_standin(trainer: Trainer) -> list[torch.Tensor]:
    """Two tensors per trainable parameter without optimizer state: the memory AdamW's moments will take."""
    optimizer = _optimizer(trainer)
    return [torch.empty_like(p) for group in optimizer.param_groups for p in group["params"]
            if p.requires_grad and p not in optimizer.state for _ in range(2)]


def _optimizer(trainer: Trainer) -> torch.optim.Optimizer:
    """The trainer's optimizer; a method with nothing to train has none, and no training step to probe."""
    if trainer.optimizer is None:
        raise MwaError("this method has no trainable parameters: no training step to probe")
    return trainer.optimizer


def find_max_batch(trainer: Trainer, cap: int, text_len: int, message: Callable[[str], None],
                   resolution: int | None = None) -> int:
    """`--batch-size auto`: the largest micro-batch ≤ cap whose training step fits (`probe_fits`; powers of two
    from 8, or multiples of `resolution` past the last one that fits); the weights untouched."""
    with trainer.without_ddp():  # distributed: each rank probes its own GPU, no collectives
        best = largest_fitting(lambda b: probe_fits(trainer, b, text_len), cap, resolution=resolution)
    if best == 0:
        raise MwaError(f"CUDA out of memory even with a batch of {min(8, cap)}",
                       hint="use a smaller backbone or --precision bf16", exit_code=EXIT_OOM)
    message(f"--batch-size auto: the largest micro-batch that fits is {best}; using batch size {best}")
    return best
