"""Learning-rate schedules: per-step linear warm-up from 0, then either a cosine down to `min_lr` over the whole run
(BEiT-3 `utils.py`, kind "cosine") or warm-up / stable / decay (kind "wsd": the peak rate held constant, then a
cosine down to `min_lr` over the last `decay_frac` of the steps).

The schedule is *fitted* to a number of optimizer steps: the budget planner calls `fit(total_steps, at_step=step)`
whenever its estimate of the steps that fit changes, so the schedule ends exactly at the last step. With "wsd" the
rate during the stable phase does not depend on the run's length, so a validation check there compares methods
without favouring the one whose schedule happened to be further along; once the decay has started, a refit moves
only its end (the rate never jumps back up). Each parameter group carries an `lr_scale` (layer-wise decay);
`apply(optimizer, step)` writes `lr * lr_scale` into every group.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

KINDS = ("cosine", "wsd")


@dataclass
class WarmupCosine:
    base_lr: float
    min_lr: float = 1e-6
    warmup_frac: float = 0.1
    total_steps: int = 1
    warmup_steps: int = 0
    kind: str = "cosine"
    decay_frac: float = 0.2
    decay_start: int = 0  # wsd: first step of the decay

    def fit(self, total_steps: int, warmup_steps: int | None = None, at_step: int | None = None) -> None:
        """Stretch the schedule over `total_steps` optimizer steps (warm-up = `warmup_frac` of them by default).

        `at_step`: the step training is at; a warm-up or (wsd) decay already under way keeps its start."""
        self.total_steps = max(1, int(total_steps))
        if warmup_steps is None and at_step is not None and at_step >= self.warmup_steps > 0:
            warmup_steps = self.warmup_steps
        if warmup_steps is None:
            warmup_steps = int(round(self.warmup_frac * self.total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))
        started = self.kind == "wsd" and at_step is not None and self.decay_start > 0 and at_step >= self.decay_start
        if not started:
            self.decay_start = max(self.warmup_steps, self.total_steps - int(round(self.decay_frac * self.total_steps)))
        self.decay_start = min(self.decay_start, self.total_steps)

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step `step` (0-based: the lr used by the step that produces step+1)."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            # linear from 0 (the first update uses lr/warmup, never exactly 0 so step 0 is not wasted)
            return self.base_lr * (step + 1) / (self.warmup_steps + 1)
        start = self.decay_start if self.kind == "wsd" else self.warmup_steps
        if step < start:
            return self.base_lr
        span = max(1, self.total_steps - start)
        t = min(1.0, max(0.0, (step - start) / span))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t))

    def apply(self, optimizer, step: int) -> float:
        """Set every group's lr for step `step`; returns the unscaled lr. No device sync: a group whose lr is a
        device tensor (a CUDA-graph step reads it there) is filled in place."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            value = lr * group.get("lr_scale", 1.0)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)
            else:
                group["lr"] = value
        return lr

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
