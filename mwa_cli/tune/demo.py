"""`mwa demo --tune`: the tuned MWA next to the default one, so a new user sees where the saving comes from.

Tunes MWA on the demo's data (trials of the demo's step count, `TRIALS` times the default MWA run's wall time in
all, more trials when some are pruned), then trains the recommended configuration for the same number of steps as
the default MWA run, as run `mwa-tuned`; the demo's report shows both, and links the tune's page."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from mwa_cli.errors import MwaError
from mwa_cli.outdir import read_marker
from mwa_cli.report.numbers import fmt_duration
from mwa_cli.train.checkpoint import find_checkpoint
from mwa_cli.train.config import TrainConfig, load_config_file
from mwa_cli.train.loop import ProgressFn, train
from mwa_cli.tune.trials import TuneInterrupted, is_finished

NAME = "mwa-tuned"
TUNE_NAME = "tune-mwa"
TRIALS = 4  # full-length trials in the tune's budget
AGAIN = "run the same `mwa demo --tune` command again to continue where it stopped"


def tuned_run(data_dir: Path, runs_dir: Path, *, backbone: str, steps: int, trial_s: float, device: str, seed: int,
              say: Callable[[str], None], progress: ProgressFn | None, force: bool = False) -> str:
    """Tune MWA in `TRIALS` × `trial_s` seconds (kept in <runs>/tune-mwa, continued when interrupted; `force`: an
    earlier tune there is removed first), train its recommendation as run `mwa-tuned` for `steps` steps; the run's
    name."""
    say(f"2/3 tuning mwa on the demo's data for about {fmt_duration(TRIALS * trial_s)}, then training its "
        f"recommendation for {steps} steps")
    if force and read_marker(runs_dir / TUNE_NAME, "tune") is not None:
        shutil.rmtree(runs_dir / TUNE_NAME)
        say(f"--force: removed the earlier tune {runs_dir / TUNE_NAME}")
    run_dir = runs_dir / NAME
    if is_finished(run_dir):
        say(f"      {NAME} finished in an earlier `mwa demo --tune`: kept")
        return NAME
    config_path = _tune(data_dir, runs_dir, backbone, steps, trial_s, device, seed, say, progress)
    values = dict(load_config_file(config_path), steps=steps, seed=seed, out=str(runs_dir), name=NAME,
                  command=f"mwa train {data_dir} --config {config_path} --seed {seed}")
    values.pop("budget", None)
    resumable = find_checkpoint(run_dir) is not None
    run = train(TrainConfig(resume=str(run_dir), out=str(runs_dir)) if resumable else TrainConfig(**values), progress)
    if run.exit_code != 0:
        raise MwaError(f"the {NAME} run ended ({run.status}): {run.message}", hint=AGAIN, exit_code=run.exit_code)
    return NAME


def _tune(data_dir: Path, runs_dir: Path, backbone: str, steps: int, trial_s: float, device: str, seed: int,
          say: Callable[[str], None], progress: ProgressFn | None) -> Path:
    """Run (or continue) the demo's tune; the recommended configuration's file."""
    from mwa_cli.tune.search import run_tune
    from mwa_cli.tune.settings import TuneSettings

    settings = TuneSettings(data_dir=str(data_dir), methods=("mwa",), backbone=backbone, device=device, seed=seed,
                            budget=f"{max(1.0, TRIALS * trial_s):.0f}s", trial_steps=steps, out=str(runs_dir),
                            name=TUNE_NAME)

    def relay(event: str, data: dict) -> None:  # a line per trial; the trials' own events draw their bars
        if event == "trial":
            say(f"      tune trial {data['name']}: {data['describe']}")
        elif event == "trial_done":
            best = "–" if data["value"] is None else f"{data['value']:.1f}"
            say(f"      tune trial {data['name']}: {data['state']}, best val RSUM {best}")
        elif progress is not None:
            progress(event, data)

    try:
        result = run_tune(settings, relay)
    except TuneInterrupted as exc:
        raise MwaError(f"the demo stopped while tuning MWA ({exc.message})", hint=AGAIN,
                       exit_code=exc.exit_code) from None
    chosen = result.methods[0]
    if chosen.config_path is None:
        raise MwaError(f"tuning MWA recommended nothing: {chosen.recommendation.reason}", hint=AGAIN, exit_code=1)
    say(f"      recommended: {chosen.recommendation.reason}")
    return chosen.config_path
