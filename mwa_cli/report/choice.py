"""Which runs the report compares: the baseline (the --compare run, or an estimate standing in for it) and the
main run the verdict is about. Picked once (report/api.py) and passed to build_report."""

from __future__ import annotations

from dataclasses import dataclass

from mwa_cli.report import references
from mwa_cli.report.collect import Run
from mwa_cli.report.protocols import recall_under

MAIN_METHOD = "mwa"


@dataclass(frozen=True)
class Choice:
    """The runs to report (the collected ones, plus the estimated baseline when one stands in), the baseline,
    the main run and the notes the picking left (several runs matched --compare)."""

    runs: tuple[Run, ...]
    baseline: Run | None
    main: Run | None
    notes: tuple[str, ...] = ()

    @property
    def baseline_estimated(self) -> bool:
        """The baseline's figures are estimates: made by --estimate, or its timing.json says so."""
        b = self.baseline
        return bool(b is not None and (b.estimated or b.timing.get("estimated")))


def pick_baseline(runs: list[Run], compare: str) -> tuple[Run | None, list[str]]:
    """The run of method or name `compare` (the most recently evaluated of several, with a note saying so)."""
    cands = [r for r in runs if r.method == compare or r.name == compare]
    notes = []
    if len(cands) > 1:
        cands.sort(key=lambda r: str(r.eval.get("created") or ""), reverse=True)
        notes.append(f"{len(cands)} runs match --compare {compare}; the most recently evaluated one, "
                     f"{cands[0].name}, is the baseline")
    return (cands[0] if cands else None), notes


def pick_main(runs: list[Run], baseline: Run | None) -> Run | None:
    """The run the verdict is about: an mwa run, of the baseline's seed when there is one (never the best of
    several seeds: that would pick the luckiest draw), then the highest RSUM."""
    others = [r for r in runs if r is not baseline and r.method != references.FROZEN]  # frozen: a reference
    if not others:
        return None
    mwa = [r for r in others if r.method == MAIN_METHOD]
    pool = mwa or others
    if baseline is not None:
        pool = [r for r in pool if r.config.get("seed") == baseline.config.get("seed")] or pool
    return max(pool, key=lambda r: (recall_under(r.eval or {}, "instance") or {}).get("rsum", -1.0))


def choose(runs: list[Run], compare: str) -> Choice:
    """The measured baseline of `compare` (None when no run matches) and the main run against it."""
    baseline, notes = pick_baseline(runs, compare)
    return Choice(tuple(runs), baseline, pick_main(runs, baseline), tuple(notes))


def with_estimate(choice: Choice, estimated: Run) -> Choice:
    """`choice` (which has no measured baseline) with the --estimate run standing in for the baseline."""
    runs = [*choice.runs, estimated]
    return Choice(tuple(runs), estimated, pick_main(runs, estimated), choice.notes)
