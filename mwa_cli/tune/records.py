"""Trials as plain data (`TrialRecord`): what the recommendation, the summary and the page need, read from the
trial's run folder (its val curve from metrics.jsonl, its times from timing.json) and its Optuna state."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATES = ("complete", "pruned", "failed", "running")  # running: interrupted, continued by the next `mwa tune`


@dataclass
class TrialRecord:
    """One trial. `curve`: (seconds, val RSUM) of its trained validation checks (step > 0), the RSUM under the
    primary protocol (label level when captions repeat), the seconds its wall time without validation checks
    (start-up, feature cache, training and checkpoints count), as the report's time to quality counts."""

    method: str
    number: int
    name: str
    state: str
    params: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[float, float]] = field(default_factory=list)
    zero_shot: float | None = None  # val RSUM of the untrained model (the step-0 check)
    wall_s: float | None = None
    steps: int | None = None
    step_s: float | None = None  # training seconds per optimizer step
    run_dir: str | None = None
    error: str | None = None

    @property
    def best(self) -> float | None:
        """The best val RSUM of the trained checks; None without one."""
        return max((v for _, v in self.curve), default=None)

    def time_to(self, target: float) -> float | None:
        """Seconds until the first trained check at or above `target`; None when never reached."""
        return next((t for t, v in self.curve if v >= target), None)


def read_curve(run_dir: Path) -> tuple[list[tuple[float, float]], float | None]:
    """(trained checks as (seconds without validation, primary val RSUM), zero-shot val RSUM) of a run folder."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            if isinstance(row, dict) and row.get("kind") == "eval" and row.get("split") == "val":
                rows.append(row)
    curve, zero = [], None
    for r in rows:
        value = r.get("primary_rsum", r.get("rsum"))
        t = r.get("time_no_val_s", r.get("time_s"))
        if value is None or t is None:
            continue
        if int(r.get("step") or 0) == 0:
            zero = float(value)
        else:
            curve.append((float(t), float(value)))
    curve.sort()
    return curve, zero


def read_timing(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / "timing.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_of(method: str, number: int, name: str, state: str, params: dict[str, Any], run_dir: Path | None,
              error: str | None = None) -> TrialRecord:
    """A trial's record from its run folder (None: it never made one)."""
    rec = TrialRecord(method, number, name, state, dict(params), error=error,
                      run_dir=str(run_dir) if run_dir is not None else None)
    if run_dir is None or not Path(run_dir).is_dir():
        return rec
    rec.curve, rec.zero_shot = read_curve(run_dir)
    timing = read_timing(run_dir)
    rec.wall_s = timing.get("wall_s")
    rec.steps = timing.get("steps")
    if timing.get("steps") and timing.get("train_s"):
        rec.step_s = float(timing["train_s"]) / int(timing["steps"])
    return rec
