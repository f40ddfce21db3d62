"""One trial: an `mwa train` run folder under <tune>/trials/, trained in this process by `train()` (the function
`mwa train` calls), its validation checks reported to Optuna, stopped cleanly when the pruner says so.

Optuna's `step` of a reported value is the trial's time in milliseconds (wall time without validation checks):
every trial has the same wall-clock length, so the pruner compares trials at the same time spent, and a
configuration that trains faster gets there with more steps. The value reported is the best val RSUM so far
(primary protocol, trained checks only): the pruner compares what a trial has reached, not a noisy last check.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mwa_cli.errors import MwaError
from mwa_cli.train.checkpoint import find_checkpoint
from mwa_cli.train.config import TrainConfig
from mwa_cli.train.loop import StopRun, train
from mwa_cli.tune.layout import trial_name
from mwa_cli.tune.records import read_curve, read_timing

ProgressFn = Callable[[str, dict], None]


class TuneInterrupted(MwaError):
    """Ctrl-C or SIGTERM stopped a trial: its run folder holds a checkpoint, the next `mwa tune` continues it."""


@dataclass
class TrialOutcome:
    state: str  # complete | pruned | failed
    value: float | None = None  # the best val RSUM (complete)
    error: str | None = None  # failed: what went wrong, with its hint


class PruneWatch:
    """The progress callback of one trial: forwards every event, reports each trained validation check's best val
    RSUM so far to the Optuna trial, and raises `StopRun` ("pruned") when its pruner says the trial is behind
    (never for a `prunable=False` trial: it still reports, so the others are compared against it)."""

    def __init__(self, trial: Any, run_dir: Path, progress: ProgressFn | None, prunable: bool = True):
        self.trial, self.run_dir, self.progress, self.prunable = trial, run_dir, progress, prunable
        self.best: float | None = None

    def __call__(self, event: str, data: dict) -> None:
        if self.progress is not None:
            self.progress(event, data)
        if event == "setup":  # a resumed run: its checks before the checkpoint count (metrics are cut there now)
            curve, _ = read_curve(self.run_dir)
            self.best = max((v for _, v in curve), default=None)
        if event != "validation" or int(data["step"]) == 0:
            return
        value = float(data["val_primary"])
        self.best = value if self.best is None else max(self.best, value)
        self.trial.report(self.best, step=int(round(1000 * float(data["elapsed_s"]))))
        if self.prunable and self.trial.should_prune():
            raise StopRun(f"pruned by the tuner at {data['elapsed_s']:.1f} s: its best val RSUM so far, "
                          f"{self.best:.2f}, is behind the other trials' at that time")


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "eval.json").is_file() and (run_dir / "adapter_model.safetensors").is_file()


def trial_config(values: dict[str, Any], trials_dir: Path, name: str) -> TrainConfig:
    """A new trial's TrainConfig (a resumable one continues from its checkpoint with its own config.json)."""
    run_dir = trials_dir / name
    if find_checkpoint(run_dir) is not None:
        return TrainConfig(resume=str(run_dir), out=str(trials_dir))
    return TrainConfig(**values, out=str(trials_dir), name=name)


def run_trial(trial: Any, method: str, values: dict[str, Any], trials_dir: Path,
              progress: ProgressFn | None, prunable: bool = True) -> TrialOutcome:
    """Train (or continue, or read) the run folder of `trial` with the TrainConfig `values`; its outcome. A
    failure of the configuration is a failed trial (its message kept); Ctrl-C / SIGTERM raise `TuneInterrupted`.
    `prunable=False`: the trial runs its whole length whatever the pruner says."""
    name = trial_name(method, trial.number)
    run_dir = trials_dir / name
    trial.set_user_attr("run", name)
    if not is_finished(run_dir):
        watch = PruneWatch(trial, run_dir, progress, prunable)
        try:
            result = train(trial_config(values, trials_dir, name), watch)
        except MwaError as exc:
            return TrialOutcome("failed", error=exc.message + (f" (hint: {exc.hint})" if exc.hint else ""))
        if result.status == "interrupted":
            raise TuneInterrupted(f"trial {name} stopped: {result.message}", exit_code=result.exit_code,
                                  hint="run the same `mwa tune` command again: finished trials are kept and this "
                                       "one continues from its checkpoint")
        if result.status not in ("completed", "pruned"):
            return TrialOutcome("failed", error=result.message)
    # finished: its resumable state is no longer needed (full fine-tuning's is several times the model's size)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    status = read_timing(run_dir).get("status", "completed")
    curve, _ = read_curve(run_dir)
    if status == "pruned":
        return TrialOutcome("pruned", value=max((v for _, v in curve), default=None))
    if not curve:
        return TrialOutcome("failed", error="the run made no validation check after training started")
    return TrialOutcome("complete", value=max(v for _, v in curve))
