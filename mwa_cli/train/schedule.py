"""Learning-rate schedule: per-step linear warm-up from 0, then cosine down to `min_lr` (BEiT-3 `utils.py`).

The schedule is *fitted* to a number of optimizer steps: the budget logic calls `fit(total_steps)` once it knows
how many steps fit in the wall-clock budget, so the cosine ends exactly at the last step. Each parameter group
carries an `lr_scale` (layer-wise decay); `apply(optimizer, step)` writes `lr * lr_scale` into every group.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class WarmupCosine:
    base_lr: float
    min_lr: float = 1e-6
    warmup_frac: float = 0.1
    total_steps: int = 1
    warmup_steps: int = 0

    def fit(self, total_steps: int, warmup_steps: int | None = None) -> None:
        """Stretch the schedule over `total_steps` optimizer steps (warm-up = `warmup_frac` of them by default)."""
        self.total_steps = max(1, int(total_steps))
        if warmup_steps is None:
            warmup_steps = int(round(self.warmup_frac * self.total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step `step` (0-based: the lr used by the step that produces step+1)."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            # linear from 0 (the first update uses lr/warmup, never exactly 0 so step 0 is not wasted)
            return self.base_lr * (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t))

    def apply(self, optimizer, step: int) -> float:
        """Set every group's lr for step `step`; returns the unscaled lr. Pure Python: no device sync."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
