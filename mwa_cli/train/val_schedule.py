"""Validation checks of a run without a time budget, placed by step: the same command checks (and so publishes)
the same steps every time, on any machine and any number of devices.

The cost-aware schedule (budget.py `val_due`) places checks by measured wall time, so two runs of one command
may check different steps and publish different "best" adapters. Without a budget the run length is fixed by
--steps/--epochs, so the share of time the checks may take is turned into a number of checks from the work they
do: a check encodes every val image and caption once; a training step encodes its batch's images and captions
forward and backward (about three forwards). Those checks are spread evenly over the run.
"""

from __future__ import annotations

import math

STEP_WORK = 3.0 * 2  # one training pair: image + text encoded, forward and backward (~3 forwards)


def check_count(total_steps: int, batch_size: int, val_items: int, val_share: float) -> int:
    """How many checks keep their work within `val_share` of the run's (checks included), at least one."""
    if total_steps <= 1 or val_items <= 0 or val_share <= 0:
        return 0
    check_in_steps = val_items / (STEP_WORK * max(1, batch_size))  # one check's work, in training steps
    allowed = val_share * total_steps / ((1.0 - val_share) * check_in_steps)
    return max(1, min(total_steps - 1, math.floor(allowed)))


def step_checks(total_steps: int, batch_size: int, val_items: int, val_share: float) -> set[int]:
    """The steps of the checks: `check_count` evenly spaced steps strictly inside the run."""
    k = check_count(total_steps, batch_size, val_items, val_share)
    return {int(round(total_steps * i / (k + 1))) for i in range(1, k + 1)} - {0, total_steps}
