"""Keep the best adapter seen on the validation split and decide when training has stopped improving.

`BestKeeper.observe(step, rsum, time_s, weights)` after every validation check: a strictly higher val RSUM makes
that step the best (its trainable weights are copied to host memory, so the artefact published at the end is the
one that scored best, whatever came after). `should_stop()` is True once `patience` checks in a row brought no
improvement (patience 0: never). The whole state travels in the resumable checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

DEFAULT_PATIENCE = 4  # validation checks without improvement; measured in docs/benchmarks.md ("Stop when done")


@dataclass
class BestKeeper:
    patience: int = DEFAULT_PATIENCE
    step: int | None = None
    rsum: float | None = None
    time_s: float | None = None
    checks: int = 0
    since_best: int = 0
    weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def observe(self, step: int, rsum: float, time_s: float,
                weights: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Record one validation check; returns True when it is the new best (its weights are then kept)."""
        self.checks += 1
        if self.rsum is None or rsum > self.rsum:
            self.step, self.rsum, self.time_s, self.since_best = int(step), float(rsum), float(time_s), 0
            self.weights = weights()
            return True
        self.since_best += 1
        return False

    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def reason(self) -> str:
        return (f"early stop: val RSUM has not improved for {self.since_best} checks (--patience {self.patience}); "
                f"best {self.rsum:.2f} at step {self.step}")

    def record(self) -> dict:
        """The `best` entry of timing.json and config.json (no weights)."""
        return {"step": self.step, "val_rsum": self.rsum, "time_s": self.time_s, "checks": self.checks,
                "patience": self.patience}

    def state_dict(self) -> dict:
        return dict(self.record(), since_best=self.since_best, weights=self.weights)

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        self.step, self.rsum, self.time_s = state.get("step"), state.get("val_rsum"), state.get("time_s")
        self.checks, self.since_best = int(state.get("checks", 0)), int(state.get("since_best", 0))
        self.weights = state.get("weights")
