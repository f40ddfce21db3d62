"""The run's clocks: named time totals and the sample count, continued across resumed segments.

`RunClocks` is the one owner of what timing.json and each checkpoint record about time: training, evaluation,
checkpoint, data-wait, validation-check, zero-shot-check and compile seconds, the samples trained on, the wall time
of earlier segments. Blocks are timed with `with clocks.timing("eval") as lap:` (`lap.seconds` after the block);
training time runs between `mark_training()` and `count_training()`, so checks and checkpoints in between are not
training time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

Clock = Literal["train", "eval", "checkpoint", "data_wait", "val_check", "val_zero_shot", "compile"]


@dataclass
class Lap:
    """The seconds of one timed block (set when the block ends)."""
    seconds: float = 0.0


class RunClocks:
    """Time totals (seconds) and samples of a run; `state()` goes into each checkpoint and comes back on resume."""

    def __init__(self, t_start: float, world_size: int, saved: dict | None = None):
        """`t_start`: time.monotonic() when this segment's budget clock started; `saved`: a checkpoint's `state()`."""
        self.t_start = t_start
        self.world_size = world_size
        # the checkpoint's "acc" record, in its own key order (a resumed run keeps what an older mwa saved)
        self._totals: dict = {"train_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0, "data_wait_s": 0.0,
                              "wall_prev_s": 0.0, "samples": 0, "segments": 0}
        self._totals.update(saved or {})
        self._totals["segments"] = int(self._totals.get("segments", 0)) + 1
        self._train_mark = time.monotonic()

    # ------------------------------------------------------------------ counting
    @contextmanager
    def timing(self, clock: Clock) -> Iterator[Lap]:
        """Add the block's time to `clock` (a block that raises is not counted)."""
        lap = Lap()
        t0 = time.monotonic()
        yield lap
        lap.seconds = time.monotonic() - t0
        self.add(clock, lap.seconds)

    def add(self, clock: Clock, seconds: float) -> None:
        key = f"{clock}_s"
        self._totals[key] = float(self._totals.get(key, 0.0)) + seconds

    def mark_training(self) -> None:
        """Training time counts from now (what ran since the last mark or count is not training)."""
        self._train_mark = time.monotonic()

    def count_training(self) -> None:
        """Add the time since the last mark to training time, and mark now."""
        now = time.monotonic()
        self._totals["train_s"] += now - self._train_mark
        self._train_mark = now

    def count_samples(self, n: int) -> None:
        self._totals["samples"] += n

    # ------------------------------------------------------------------ reading
    def total(self, clock: Clock) -> float:
        """Seconds counted on `clock` in the whole run (0 when never used)."""
        return float(self._totals.get(f"{clock}_s", 0.0))

    @property
    def samples(self) -> int:
        return int(self._totals["samples"])

    @property
    def wall_prev_s(self) -> float:
        """Wall time of the earlier segments of a resumed run."""
        return float(self._totals["wall_prev_s"])

    def elapsed(self) -> float:
        """Wall time of the whole run so far, earlier segments included."""
        return time.monotonic() - self.t_start + self.wall_prev_s

    def elapsed_without_evals(self) -> float:
        """Wall time without evaluations (time to quality excludes the checks)."""
        return self.elapsed() - self.total("eval")

    def device_seconds(self) -> float:
        """Device-seconds of the whole run: each segment's wall time x its own number of devices."""
        prev = float(self._totals.get("device_prev_s",
                                      self.wall_prev_s * int(self._totals.get("prev_world_size", 1))))
        return prev + (self.elapsed() - self.wall_prev_s) * self.world_size

    def deadline(self, budget_s: float | None) -> float | None:
        """The monotonic time the budget ends (earlier segments' wall time spent), or None without one."""
        return None if budget_s is None else self.t_start + budget_s - self.wall_prev_s

    def state(self) -> dict:
        """The record a checkpoint keeps (`acc`), with the wall and device time so far."""
        return dict(self._totals, wall_prev_s=self.elapsed(), device_prev_s=self.device_seconds())
