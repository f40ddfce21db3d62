"""How many steps a run trains: known from the start without a budget; under one, unknown (`planned` False)
while the warm-up measures the step time, then planned and refitted by the budget planner."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepPlan:
    """The run's planned total of optimizer steps, the one copy the loop reads and moves."""
    total_steps: int
    planned: bool  # total_steps is final (no budget measurement pending)

    def fix(self, total_steps: int) -> None:
        """The plan is made: `total_steps` from here on (refits move it further)."""
        self.total_steps, self.planned = total_steps, True

    def goes_on(self, step: int) -> bool:
        """Steps are left after `step` (always, while the plan is not made)."""
        return not self.planned or step < self.total_steps

    def ended_at(self, step: int) -> bool:
        """`step` is the plan's last (or past it)."""
        return self.planned and step >= self.total_steps

    def shown(self) -> int | None:
        """The total for progress events: None until the plan is made."""
        return self.total_steps if self.planned else None
