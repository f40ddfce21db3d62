"""Fit a run into a wall-clock budget that covers *everything*: set-up, training steps, evaluations, checkpoints
and the final evaluation + artefacts.

How (`train()` drives it):
1. A val evaluation at step 0 (the zero-shot point of the curve) measures evaluation seconds per item
   (image or caption).
2. Warm-up measurement: the first steps (1 on CPU, 3 on CUDA: allocator/autotune/compile) are discarded, then at
   least 5 steps and 2 s are timed (device synchronised only at the two ends; at most 5 % of the budget).
3. A checkpoint is written and timed.
4. `plan()`: steps = (deadline − now − reserve) / (step time + amortised checkpoint time), where reserve =
   intermediate val evals + final val eval + final test eval (+30 % for the top-k lists) + adapter save + a
   margin of 0.5 s + 1 % of the budget. The schedule's cosine is fitted to exactly these steps.
5. Every ~10 % of the planned steps until 80 % (at a logging step, which syncs anyway), the step time is
   re-measured (mean over all steps since the plan) and the schedule re-fitted when the fitting step count moves
   by more than 3 % (warm-up steps, a busy machine or a cooling GPU change the speed).
6. `must_stop()` at every step boundary (host clock only, no device sync): if the next step plus what remains
   to do would pass the deadline, training stops early (the schedule is then cut short; said in the log).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

EVAL_OVERHEAD_S = 0.2


@dataclass
class Measurement:
    discard: int = 1
    min_steps: int = 5
    min_seconds: float = 2.0
    max_seconds: float = 60.0
    max_steps: int | None = None  # never measure past a --steps/--epochs limit
    n: int = 0
    counted: int = 0
    t0: float | None = None
    step_time: float = 0.0

    def tick(self, step: int, sync: Callable[[], None]) -> bool:
        """Call after every step; returns True when the measurement is complete (step_time set)."""
        self.n += 1
        if self.t0 is None:
            if self.n >= self.discard:
                sync()
                self.t0 = time.monotonic()
            if self.max_steps is not None and step >= self.max_steps:
                sync()
                self.step_time = max(1e-6, time.monotonic() - (self.t0 or time.monotonic()))
                return True
            return False
        self.counted += 1
        elapsed = time.monotonic() - self.t0
        enough = self.counted >= self.min_steps and elapsed >= self.min_seconds
        if enough or elapsed >= self.max_seconds or (self.max_steps is not None and step >= self.max_steps):
            sync()
            self.step_time = max(1e-6, (time.monotonic() - self.t0) / self.counted)
            return True
        return False


@dataclass
class BudgetPlanner:
    budget_s: float | None
    deadline: float | None  # time.monotonic() value by which the run must be finished
    val_items: int
    final_items: int
    val_evals: int
    checkpoint_every: int
    checkpoint_minutes: float
    batch_size: int
    eval_s_per_item: float | None = None
    ckpt_s: float = 0.0
    step_time: float | None = None
    planned_evals: list[int] = field(default_factory=list)

    # ------------------------------------------------------------ observations
    def observe_eval(self, seconds: float, items: int) -> None:
        per = max(0.0, seconds - EVAL_OVERHEAD_S) / max(1, items)
        self.eval_s_per_item = per if self.eval_s_per_item is None else max(per, 0.5 * (per + self.eval_s_per_item))

    def observe_checkpoint(self, seconds: float) -> None:
        self.ckpt_s = max(self.ckpt_s, seconds) if self.ckpt_s else seconds

    def new_measurement(self, device_type: str, max_steps: int | None = None) -> Measurement:
        cap = 60.0 if self.budget_s is None else max(0.5, 0.05 * self.budget_s)
        return Measurement(discard=3 if device_type == "cuda" else 1, min_seconds=min(2.0, cap), max_seconds=cap,
                           max_steps=max_steps)

    # ------------------------------------------------------------ estimates
    def _per_item(self) -> float:
        if self.eval_s_per_item is not None:
            return self.eval_s_per_item
        st = self.step_time or 0.0  # no val split: forward-only of one item ≈ a sixth of a train pair
        return st / max(1, self.batch_size) / 2.0

    def val_eval_s(self) -> float:
        return EVAL_OVERHEAD_S + self.val_items * self._per_item() if self.val_items else 0.0

    def final_reserve_s(self) -> float:
        final_eval = EVAL_OVERHEAD_S + 1.3 * self.final_items * self._per_item()
        adapter = 0.2 + 0.5 * self.ckpt_s
        margin = 0.5 + 0.01 * (self.budget_s or 0.0)
        return self.val_eval_s() + final_eval + adapter + margin

    # ------------------------------------------------------------ plan
    def plan(self, step: int, step_time: float, limit: int | None, now: float,
             evals_left: int | None = None) -> tuple[int, str]:
        """Total optimizer steps that fit; returns (total_steps, a sentence saying why)."""
        self.step_time = step_time
        if self.deadline is None:
            total = int(limit if limit is not None else step)
            return total, f"{total} steps (no budget)"
        evals_left = self.val_evals if evals_left is None else evals_left
        remaining = self.deadline - now - self.final_reserve_s() - evals_left * self.val_eval_s()
        if self.checkpoint_every > 0:
            eff = step_time + self.ckpt_s / self.checkpoint_every
        else:
            eff = step_time * (1.0 + self.ckpt_s / max(1.0, self.checkpoint_minutes * 60.0))
        fit = max(0, int(math.floor(remaining / eff))) if remaining > 0 else 0
        total = step + fit
        why = (f"budget {self.budget_s:.0f} s: {step_time * 1000:.1f} ms/step measured → {total} steps "
               f"(evaluations and checkpoints reserved)")
        if limit is not None and limit < total:
            total = limit
            why = f"{total} steps (--steps/--epochs limit ends before the budget)"
        total = max(total, step)
        return total, why

    def eval_steps(self, total_steps: int) -> set[int]:
        k = self.val_evals
        if k <= 0 or total_steps <= 1:
            return set()
        self.planned_evals = sorted({int(round(total_steps * i / (k + 1))) for i in range(1, k + 1)} - {0, total_steps})
        return set(self.planned_evals)

    def must_stop(self, step: int, total_steps: int, eval_steps: set[int]) -> bool:
        """True when one more step plus the evaluations still due would pass the deadline."""
        if self.deadline is None or self.step_time is None:
            return False
        evals_left = sum(1 for e in eval_steps if e > step)
        need = self.step_time + evals_left * self.val_eval_s() + self.final_reserve_s()
        return time.monotonic() + need > self.deadline
