"""Fit a run into a wall-clock budget that covers *everything*: set-up, training steps, evaluations, checkpoints
and the final evaluation + artefacts, and decide when to validate.

How (`train()` drives it; every decision reads the planner's `clock`, so tests drive it with a scripted one):
1. A val evaluation at step 0 (the zero-shot point of the curve) measures evaluation seconds per item
   (image or caption).
2. Warm-up measurement: the first steps (1 on CPU, 3 on CUDA: allocator/autotune) are discarded, then at
   least 5 steps and 2 s are timed (device synchronised only at the two ends; at most 5 % of the budget). This
   gives only the *first* plan. Compiled layers (the default on CUDA) are compiled before the first step, at two
   text widths and for evaluation (`Trainer.warm_compile`, said once with its time), so no measured step pays
   for a compilation: that time is spent before the clock reads `now`, like the start-up.
3. `plan()`: steps = now + (deadline − now − reserve) / (step time + amortised checkpoint time), where reserve =
   final val eval + final test eval (+5 % for the top-k lists and ranks) + the end of the run (`EndOfRun`: the
   last checkpoint, the published weights written at the measured checkpoint write speed (an assumed one until
   a checkpoint is timed) and read back at the page cache's measured speed, the final evaluation's model rebuilt
   as set-up built it) + a margin of 0.5 s + 0.5 % of the budget, and the validation checks still to come (their
   share of the time when the checks are cost-aware). timing.json's "end" records what this reserve held and
   what the end took.
   Time already spent (start-up, warm-up, compilation, cache fill, resumed segments) is simply gone from
   `deadline − now`: it is never mistaken for the step rate.
4. `observe_progress()` after steps (every step on the CPU, at logging steps on CUDA where the loop syncs anyway):
   the step time is re-measured over the recent window of training time (so a slowdown or the end of a warm-up
   shows within seconds) and the plan refitted; the loop moves the schedule's end when the plan moves.
5. `must_stop()` at every step boundary: if the next step plus what remains to do would pass the deadline,
   training stops (the schedule is then cut short; said in the log).
6. `val_due()`: cost-aware validation. With `val_evals` None (auto) a check is due when, with it, the checks after
   step 0 stay within `val_share` of the wall time so far; an explicit `val_evals` = k keeps k evenly spaced
   checks. The step-0 check is the process's first evaluation (cold: 2–3× slower on a CPU), so under a budget
   one more check comes right after the warm-up measurement, before the first plan, to measure the warm cost the
   final evaluations are reserved with; the following ones wait until the share has paid for it (so the bound
   holds for any run longer than 20 checks' cost).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mwa_cli.fileio import sha256_file

EVAL_OVERHEAD_S = 0.2
# The final evaluation also keeps the top-k lists and per-query ranks: within the noise of a plain evaluation
# (BEiT-3 Base on 88 test pairs, CPU), so a small share covers them.
FINAL_EVAL_EXTRA = 1.05
# Bytes a second the end of a run is assumed to write before any checkpoint has been timed: the rate a full
# fine-tuning of Large wrote its last checkpoint and published weights at on an H100 host (10.8 GB in 25 s).
# Where the end is large, a synced write of WRITE_PROBE_BYTES in the run folder measures the disk instead (this
# project's 2-core machine: 265 MB/s, dd with fsync).
ASSUMED_WRITE_BYTES_PER_S = 400e6
# The published weights are read back by the final evaluation right after they were written, from the page cache:
# at memory speed, not the disk's. Assumed until the probe has read (and hashed) its own file back the same way.
ASSUMED_READ_BYTES_PER_S = 1e9
WRITE_PROBE_BYTES = 64 * 2**20
PROBE_ABOVE_BYTES = 256 * 2**20  # trainable weights below this end in seconds at any disk speed: not probed


@dataclass
class EndOfRun:
    """What the end of a run writes and reads after its last step, so the reserve holds it: the last checkpoint
    (the size of the checkpoints already timed), the published weights (written and hashed like a checkpoint,
    then read back by the final evaluation), and the final evaluation's fresh model, built as set-up built it
    (timed there)."""

    rebuild_s: float  # seconds the backbone build took at set-up (weights read and checked)
    published_bytes: int  # the trainable weights the adapter file holds
    state_bytes: Callable[[], int]  # a checkpoint's tensors as they are now (trainables + optimizer state)
    write_bytes_per_s: float = ASSUMED_WRITE_BYTES_PER_S  # until a checkpoint is timed (measured where large)
    read_bytes_per_s: float = ASSUMED_READ_BYTES_PER_S  # a just-written file read back (measured where large)

    def seconds(self, ckpt_s: float) -> float:
        """The end's seconds, given that writing (and hashing) a checkpoint took `ckpt_s`: the published weights
        are written and hashed at that speed, then read back at `read_bytes_per_s` (they are in the page cache)."""
        per_byte = ckpt_s / max(1, self.state_bytes())
        return (ckpt_s + self.published_bytes * per_byte + self.published_bytes / self.read_bytes_per_s
                + self.rebuild_s)

    def assumed_seconds(self) -> float:
        """The end's seconds before any checkpoint was timed: its bytes at `write_bytes_per_s`."""
        return self.seconds(self.state_bytes() / self.write_bytes_per_s)


@dataclass
class EndRecord:
    """What the work after the last step was reserved and what it took, in seconds (timing.json's "end"), so a
    run that ends early or late shows which part the reserve misjudged."""
    reserved: dict[str, float] | None  # `BudgetPlanner.reserve_parts()` when training stopped (None: no budget)
    taken: dict[str, float] = field(default_factory=dict)  # checkpoint_s, val_s, publish_s, final_eval_s

    @contextmanager
    def timing(self, part: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.taken[part] = time.monotonic() - t0

    def record(self) -> dict:
        reserved = self.reserved or {}
        return {"reserved_s": round(sum(reserved.values()), 3), "taken_s": round(sum(self.taken.values()), 3),
                "reserved": {k: round(v, 3) for k, v in reserved.items()},
                "taken": {k: round(v, 3) for k, v in self.taken.items()}}


@dataclass(frozen=True)
class DiskSpeed:
    """Bytes a second of a synced write to a folder, and of reading the just-written file back with its sha256."""
    write: float
    read: float


def disk_speed(folder: Path, nbytes: int = WRITE_PROBE_BYTES) -> DiskSpeed | None:
    """`DiskSpeed` of `folder`, measured with a probe file of `nbytes` (removed after); None when it could not be
    written (the run's own writes will then say why)."""
    probe = folder / ".write-probe.tmp"  # a killed run's leftover is removed with the run's other .*.tmp files
    block, blocks = os.urandom(2**20), max(1, nbytes // 2**20)
    written = blocks * len(block)
    try:
        t0 = time.monotonic()
        with open(probe, "wb") as fh:
            for _ in range(blocks):
                fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
        t1 = time.monotonic()
        sha256_file(probe)  # as the final evaluation reads the published weights: hashed, from the page cache
        t2 = time.monotonic()
        return DiskSpeed(write=written / max(1e-6, t1 - t0), read=written / max(1e-6, t2 - t1))
    except OSError:
        return None
    finally:
        probe.unlink(missing_ok=True)


def end_of_run(trainer, rebuild_s: float, probe_dir: Path | None = None) -> EndOfRun:
    """The `EndOfRun` of a trainer's run (sizes read from its tensors; nothing is copied). With `probe_dir` (the
    run folder, on the process that writes it), a large end's disk speeds are measured there."""
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def state_bytes() -> int:
        opt = trainer.optimizer.state.values() if trainer.optimizer is not None else ()
        moments = sum(t.numel() * t.element_size() for st in opt for t in st.values() if hasattr(t, "numel"))
        return sum(p.numel() * p.element_size() for p in params) + moments

    published = sum(p.numel() * p.element_size() for p in params)
    measured = disk_speed(probe_dir) if probe_dir is not None and published >= PROBE_ABOVE_BYTES else None
    speeds = measured or DiskSpeed(write=ASSUMED_WRITE_BYTES_PER_S, read=ASSUMED_READ_BYTES_PER_S)
    return EndOfRun(rebuild_s=float(rebuild_s), published_bytes=published, state_bytes=state_bytes,
                    write_bytes_per_s=speeds.write, read_bytes_per_s=speeds.read)


RATE_WINDOW_S = 3.0  # the step time is the mean over at least this much recent training time
RATE_WINDOW_FRAC = 0.15  # ... or this share of the training time so far, whichever is longer


@dataclass
class Measurement:
    discard: int = 1
    min_steps: int = 5
    min_seconds: float = 2.0
    max_seconds: float = 60.0
    max_steps: int | None = None  # never measure past a --steps/--epochs limit
    clock: Callable[[], float] = time.monotonic
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
                self.t0 = self.clock()
            if self.max_steps is not None and step >= self.max_steps:
                sync()
                self.step_time = max(1e-6, self.clock() - (self.t0 or self.clock()))
                return True
            return False
        self.counted += 1
        elapsed = self.clock() - self.t0
        enough = self.counted >= self.min_steps and elapsed >= self.min_seconds
        if enough or elapsed >= self.max_seconds or (self.max_steps is not None and step >= self.max_steps):
            sync()
            self.step_time = max(1e-6, (self.clock() - self.t0) / self.counted)
            return True
        return False


@dataclass
class BudgetPlanner:
    budget_s: float | None
    deadline: float | None  # clock() value by which the run must be finished
    val_items: int
    final_items: int
    val_evals: int | None  # None: cost-aware checks (at most val_share of the time); k: k evenly spaced checks
    checkpoint_every: int
    checkpoint_minutes: float
    batch_size: int
    val_share: float = 0.05
    clock: Callable[[], float] = time.monotonic
    eval_s_per_item: float | None = None
    ckpt_s: float = 0.0
    step_time: float | None = None
    planned_evals: list[int] = field(default_factory=list)
    marks: list[tuple[int, float]] = field(default_factory=list)  # (step, cumulative training seconds)
    warm_eval_seen: bool = False
    rate_from_s: float = 0.0  # training seconds when the re-measuring started (the window grows from there)
    end: EndOfRun | None = None  # sizes of the end of the run; None: half a checkpoint is reserved for it
    end_s: float = 0.0  # the end's seconds as of the latest checkpoint

    # ------------------------------------------------------------ observations
    def observe_eval(self, seconds: float, items: int, warm: bool = True) -> None:
        """Record what an evaluation of `items` cost; `warm`: not the process's first (the step-0 check is cold)."""
        self.warm_eval_seen = self.warm_eval_seen or warm
        per = max(0.0, seconds - EVAL_OVERHEAD_S) / max(1, items)
        # the latest check predicts the final evaluation best: one slowed by a busy machine (or a cold start)
        # must not inflate the reserve for the rest of the run
        self.eval_s_per_item = per

    def observe_checkpoint(self, seconds: float) -> None:
        self.ckpt_s = max(self.ckpt_s, seconds) if self.ckpt_s else seconds
        if self.end is not None:
            self.end_s = self.end.seconds(self.ckpt_s)

    def start_rate(self, step: int, train_s: float, step_time: float | None = None) -> None:
        """Begin re-measuring the step time from here (after the warm-up measurement, or on resume)."""
        self.marks = [(int(step), float(train_s))]
        self.rate_from_s = float(train_s)
        if step_time is not None:
            self.step_time = step_time

    def observe_progress(self, step: int, train_s: float) -> float | None:
        """Record the cumulative training seconds at `step`; returns the refreshed step time (None: too early)."""
        if not self.marks or step <= self.marks[-1][0]:
            if not self.marks:
                self.marks = [(int(step), float(train_s))]
            return None
        self.marks.append((int(step), float(train_s)))
        window = max(RATE_WINDOW_S, RATE_WINDOW_FRAC * (train_s - self.rate_from_s))
        ref = self.marks[0]
        for m in reversed(self.marks[:-1]):
            ref = m
            if train_s - m[1] >= window:
                break
        self.marks = [m for m in self.marks if m[0] >= ref[0]]  # older marks are never used again
        self.step_time = max(1e-6, (train_s - ref[1]) / (step - ref[0]))
        return self.step_time

    def new_measurement(self, device_type: str, max_steps: int | None = None) -> Measurement:
        cap = 60.0 if self.budget_s is None else max(0.5, 0.05 * self.budget_s)
        return Measurement(discard=3 if device_type == "cuda" else 1, min_seconds=min(2.0, cap), max_seconds=cap,
                           max_steps=max_steps, clock=self.clock)

    # ------------------------------------------------------------ estimates
    def _per_item(self) -> float:
        if self.eval_s_per_item is not None:
            return self.eval_s_per_item
        st = self.step_time or 0.0  # no val split: forward-only of one item ≈ a sixth of a train pair
        return st / max(1, self.batch_size) / 2.0

    def val_eval_s(self) -> float:
        return EVAL_OVERHEAD_S + self.val_items * self._per_item() if self.val_items else 0.0

    def final_reserve_s(self) -> float:
        return sum(self.reserve_parts().values())

    def reserve_parts(self) -> dict[str, float]:
        """What the reserve for the work after the last step holds, in seconds: the last val check, the final
        evaluation (with its top-k lists), the end of the run (`EndOfRun`) and a margin."""
        final_eval = EVAL_OVERHEAD_S + FINAL_EVAL_EXTRA * self.final_items * self._per_item()
        return {"val_s": self.val_eval_s(), "final_eval_s": final_eval,
                "end_s": 0.2 + self._end_seconds(), "margin_s": 0.5 + 0.005 * (self.budget_s or 0.0)}

    def _end_seconds(self) -> float:
        """The end of the run (`EndOfRun`): as of the latest checkpoint, or at the assumed write speed before
        one was timed (a short run may write its first only at the end); without sizes, half a checkpoint."""
        if self.end is None:
            return 0.5 * self.ckpt_s
        return self.end_s if self.ckpt_s > 0 else self.end.assumed_seconds()

    @property
    def cost_aware(self) -> bool:
        return self.val_evals is None and self.val_items > 0 and self.val_share > 0

    # ------------------------------------------------------------ plan
    def plan(self, step: int, step_time: float, limit: int | None, now: float | None = None,
             evals_left: int | None = None, checks_s: float = 0.0, elapsed_s: float = 0.0) -> tuple[int, str]:
        """Total optimizer steps that fit; returns (total_steps, a sentence saying why).

        `checks_s`: seconds spent in validation checks after step 0 so far; `elapsed_s`: wall time of the run so
        far (cost-aware checks: those that will still fit in their share are reserved)."""
        self.step_time = step_time
        now = self.clock() if now is None else now
        if self.deadline is None:
            total = int(limit if limit is not None else step)
            return total, f"{total} steps (no budget)"
        if evals_left is None and not self.cost_aware:
            evals_left = (sum(1 for e in self.planned_evals if e > step) if self.planned_evals
                          else (self.val_evals or 0) if self.val_items else 0)
        evals_left = evals_left or 0
        remaining = self.deadline - now - self.final_reserve_s() - evals_left * self.val_eval_s()
        e = self.val_eval_s()
        if self.cost_aware and remaining > 0 and e > 0:  # the checks still to come within their share
            last = self.deadline - now - self.final_reserve_s() - e - step_time  # val_due refuses later checks
            allowed = self.val_share * (elapsed_s + max(0.0, last)) - checks_s
            remaining -= max(0, math.floor(allowed / e)) * e
        if self.checkpoint_every > 0:
            eff = step_time + self.ckpt_s / self.checkpoint_every
        else:
            eff = step_time * (1.0 + self.ckpt_s / max(1.0, self.checkpoint_minutes * 60.0))
        fit = max(0, int(math.floor(remaining / eff))) if remaining > 0 else 0
        total = step + fit
        why = (f"budget {self.budget_s:.0f} s: {step_time * 1000:.1f} ms/step measured at step {step} → {total} "
               f"steps (time already spent, evaluations and checkpoints counted)")
        if limit is not None and limit < total:
            total = limit
            why = f"{total} steps (--steps/--epochs limit ends before the budget)"
        total = max(total, step)
        return total, why

    def eval_steps(self, total_steps: int) -> set[int]:
        """Explicit `val_evals` = k: the k evenly spaced steps of the checks (none when cost-aware)."""
        k = self.val_evals or 0
        if self.cost_aware or k <= 0 or total_steps <= 1 or not self.val_items:
            self.planned_evals = []
            return set()
        self.planned_evals = sorted({int(round(total_steps * i / (k + 1))) for i in range(1, k + 1)} - {0, total_steps})
        return set(self.planned_evals)

    def val_due(self, checks_s: float, elapsed_s: float, now: float | None = None) -> bool:
        """Cost-aware: True when one more check keeps the checks after step 0 (`checks_s` so far) within
        `val_share` of the wall time (`elapsed_s`), and still leaves room for a step and the final work. The first
        one after the (cold) step-0 check comes at once: it measures the warm cost the final work is reserved
        with, and the next ones wait until the share has paid for it."""
        if not self.cost_aware or self.eval_s_per_item is None:
            return False
        if self.warm_eval_seen and checks_s + self.val_eval_s() > self.val_share * elapsed_s:
            return False
        return self.check_fits(now)

    def check_fits(self, now: float | None = None) -> bool:
        """Whether one more check, a step and the final work still fit before the deadline (always without one)."""
        if self.deadline is None:
            return True
        now = self.clock() if now is None else now
        return now + self.val_eval_s() + (self.step_time or 0.0) + self.final_reserve_s() <= self.deadline

    def must_stop(self, step: int, total_steps: int, eval_steps: set[int], now: float | None = None) -> bool:
        """True when one more step plus the evaluations still due would pass the deadline."""
        if self.deadline is None or self.step_time is None:
            return False
        evals_left = sum(1 for e in eval_steps if e > step)
        need = self.step_time + evals_left * self.val_eval_s() + self.final_reserve_s()
        return (self.clock() if now is None else now) + need > self.deadline

    def state(self) -> dict:
        """What a resumed run needs to keep planning without re-measuring."""
        return {"step_time": self.step_time, "eval_s_per_item": self.eval_s_per_item, "ckpt_s": self.ckpt_s,
                "warm_eval_seen": self.warm_eval_seen, "end_s": self.end_s}

    def load_state(self, state: dict | None) -> None:
        for key, value in (state or {}).items():
            setattr(self, key, value)


# ------------------------------------------------------------ runs too short for the data
SHORT_SCHEDULE = 0.25  # below this share of the default schedule, a run's recall says little about the method


def default_schedule_of(record: dict) -> tuple[int, str] | None:
    """(steps, how they were chosen) of the default schedule (`config.default_steps`) for a run's data and batch,
    from its config.json record; None when the record lacks what it needs (runs of an older mwa)."""
    from mwa_cli.train.config import default_steps

    pos, batch = record.get("positives_detail"), record.get("batch_size")
    if not isinstance(pos, dict) or not isinstance(pos.get("pairs"), int) or not isinstance(batch, int) or batch < 1:
        return None
    return default_steps(bool(pos.get("templated")), pos["pairs"], max(1, pos["pairs"] // batch))


def share_text(share_pct: float) -> str:
    """A share of the default schedule in words: one decimal below 1 % (0.6), none above (13)."""
    return f"{share_pct:.1f}" if share_pct < 1 else f"{share_pct:.0f}"


def short_schedule_note(steps: int, default: tuple[int, str] | None, subject: str = "this budget allows") -> str | None:
    """"this budget allows ≈ M steps, k % of the default N for this data: …" when `steps` fall short of the
    default schedule; None otherwise."""
    if default is None or default[0] <= 0 or steps >= default[0]:
        return None
    share = 100.0 * steps / default[0]
    pct = share_text(share)
    effect = ("recall will not mean much" if share < 100 * SHORT_SCHEDULE
              else "recall may still be rising when it ends")
    return (f"{subject} ≈ {steps:,} steps, {pct} % of the default {default[0]:,} for this data ({default[1]}): "
            f"{effect}")
