"""A run's config.json while it trains: the record setup wrote, then the step plan as the budget fixes and refits
it. `ConfigRecord.write` is the one place a training run writes the file (rank 0: a `NullRunDir` skips it)."""

from __future__ import annotations

from dataclasses import dataclass

from mwa_cli.train.run_dir import RunDir


@dataclass(frozen=True)
class ConfigRecord:
    """config.json as written (`record`), and its run folder."""
    run: RunDir
    record: dict

    def write(self) -> None:
        self.run.write_config(self.record)

    @property
    def plan(self) -> dict | None:
        """The step plan (budget runs, once measured), or None."""
        return self.record.get("plan")

    def set_plan(self, plan: dict) -> None:
        """The budget's first plan, written at once."""
        self.record["plan"] = plan
        self.write()

    def refit_plan(self, **fields) -> None:
        """A re-planned total, counted and recorded (not written: the loop writes the larger moves only)."""
        plan = self.record.setdefault("plan", {})
        plan["refits"] = int(plan.get("refits", 0)) + 1
        plan.update(fields)

    def write_final_plan(self) -> None:
        """The plan as it finally stood, when there is one."""
        if self.plan:
            self.write()
