"""The recommendation: the fastest trial whose val recall is within a tolerance of the best (docs/decisions.md).

Definitions, over the trials that completed (pruned, failed and interrupted trials are never recommended and do
not set the best):

* best: the highest best-val-RSUM of a trial (primary protocol; trained checks only);
* within tolerance: a trial whose best val RSUM is at least (1 − tolerance) × best;
* fastest: the least time to reach `share` (95 %) × best, the *same* target for every trial, counted as the
  report counts time to quality: the trial's wall time without validation checks until its first check at or
  above the target. Ties: the higher best val RSUM, then the earlier trial.

The best trial itself reaches the target, so a recommendation exists whenever a trial completed; when no other
configuration came within the tolerance (or none was faster), the best one is recommended and the reason says so.
When the best trial reached the target only in the last third of its length and its best check was one of its
last two, its curve had not levelled off: the trials were too short to tell the configurations' speeds apart,
and a note says so (a trial ended by early stopping has levelled off: its best lies `patience` checks back).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mwa_cli.tune.records import TrialRecord

LATE_SHARE = 2 / 3  # reaching the target after this share of the trial: still rising at its end


@dataclass
class Recommendation:
    chosen: TrialRecord | None
    best: TrialRecord | None
    tolerance: float
    share: float
    target: float | None = None  # share × best val RSUM: the time-to-quality target
    floor: float | None = None  # (1 − tolerance) × best val RSUM
    candidates: list[TrialRecord] = field(default_factory=list)  # within tolerance, fastest first
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def time_s(self) -> float | None:
        """The chosen trial's time to the target."""
        return None if self.chosen is None or self.target is None else self.chosen.time_to(self.target)

    @property
    def best_time_s(self) -> float | None:
        return None if self.best is None or self.target is None else self.best.time_to(self.target)


def _speed_key(rec: TrialRecord, target: float) -> tuple:
    time = rec.time_to(target)
    return (time is None, time if time is not None else 0.0, -(rec.best or 0.0), rec.number)


def recommend(records: list[TrialRecord], tolerance: float = 0.01, share: float = 0.95) -> Recommendation:
    """The recommendation over `records` (see the module docstring)."""
    done = [r for r in records if r.state == "complete" and r.best is not None]
    if not done:
        return Recommendation(None, None, tolerance, share,
                              reason="no trial completed: nothing to recommend yet (pruned, failed and interrupted "
                                     "trials are not recommended)")
    best = max(done, key=lambda r: (r.best, -r.number))
    floor, target = (1.0 - tolerance) * best.best, share * best.best
    candidates = sorted((r for r in done if r.best >= floor and r.time_to(target) is not None),
                        key=lambda r: _speed_key(r, target))
    chosen = candidates[0]
    rec = Recommendation(chosen, best, tolerance, share, target, floor, candidates)
    pct, tol = f"{100 * share:g} %", f"{100 * tolerance:g} %"
    if chosen is best and len(candidates) == 1:
        rec.reason = (f"no other configuration came within {tol} of the best val RSUM ({best.best:.2f}): the best "
                      f"one, {best.name}, is recommended")
    elif chosen is best:
        rec.reason = (f"the best configuration, {best.name}, is also the fastest of the {len(candidates)} within "
                      f"{tol} of it (to {pct} of its val RSUM: {_secs(rec.time_s)})")
    else:
        rec.reason = (f"{chosen.name} reached {pct} of the best val RSUM in {_secs(rec.time_s)}, the best "
                      f"({best.name}) in {_secs(rec.best_time_s)}; its val RSUM {chosen.best:.2f} is within {tol} "
                      f"of the best {best.best:.2f}")
    late = _too_short_note(best, target, pct)
    if late:
        rec.notes.append(late)
    if best.zero_shot is not None and best.best <= best.zero_shot:
        rec.notes.append(f"no trial beat the untrained backbone on val (zero-shot val RSUM {best.zero_shot:.2f}): "
                         "within a trial's length, training did not help")
    return rec


def _too_short_note(best: TrialRecord, target: float, pct: str) -> str | None:
    """A note when the best trial reached the target late in its length (None otherwise)."""
    reached, end = best.time_to(target), best.curve[-1][0]
    rising = max(v for _, v in best.curve[-2:]) == best.best
    if reached is None or end <= 0 or reached < LATE_SHARE * end or not rising:
        return None
    return (f"the best trial reached {pct} of its val RSUM only at {reached:.1f} s of its {end:.1f} s: the trials "
            "were too short for the curves to level off, so which configuration is fastest was barely measured; "
            "a longer --budget (or --trial-budget) gives a clearer choice")


def _secs(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.1f} s"
