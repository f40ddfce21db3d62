"""`run_tune(settings, progress)`: the search behind `mwa tune`, method by method, then the recommendation.

Each method has its own Optuna study in the tune folder's journal file (so a later run continues it): a TPE
sampler seeded from --seed (and the number of trials so far, so a continued search draws new configurations),
the defaults enqueued first (`space.first_params`, never pruned), successive halving of trials that fall behind
(pruners below).
Trials run one after another until the method's share of the budget cannot hold another trial, or --trials are
done. Trials an interrupted run left running are continued first, from their checkpoints.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from mwa_cli.errors import EXIT_SIGTERM, ConfigError, DataError, MwaError
from mwa_cli.outdir import remove_temp
from mwa_cli.tune.folder import TuneFolder, open_folder
from mwa_cli.tune.layout import JOURNAL, is_tune_folder, trial_name
from mwa_cli.tune.records import TrialRecord, record_of
from mwa_cli.tune.rule import Recommendation, recommend
from mwa_cli.tune.settings import TuneSettings
from mwa_cli.tune.space import build_space, describe
from mwa_cli.tune.trials import TrialOutcome, TuneInterrupted, run_trial

ProgressFn = Callable[[str, dict], None]
N_STARTUP = 4  # TPE's random trials before it models the results (the enqueued defaults count among them)
REDUCTION = 3  # successive halving keeps the best third at each rung
FIRST_RUNG = 1 / 6  # of a trial's length: the first comparison (the next ones at 1/2, 3/2: the end is 1)
MAX_FAILURES_IN_A_ROW = 3
INSTALL_HINT = 'install it with: pip install "mwa-cli[tune]" (or pip install optuna)'


@dataclass
class MethodResult:
    method: str
    records: list[TrialRecord]
    recommendation: Recommendation
    config_path: Path | None
    command: str | None
    spent_s: float
    budget_s: float | None
    stopped: str  # why its search ended (this time)

    def to_dict(self) -> dict[str, Any]:
        rec = self.recommendation
        return {"method": self.method, "spent_s": round(self.spent_s, 1), "budget_s": self.budget_s,
                "stopped": self.stopped, "config": str(self.config_path) if self.config_path else None,
                "command": self.command, "chosen": rec.chosen.name if rec.chosen else None,
                "best": rec.best.name if rec.best else None, "target": rec.target, "floor": rec.floor,
                "time_to_target_s": rec.time_s, "best_time_to_target_s": rec.best_time_s, "reason": rec.reason,
                "notes": rec.notes, "tolerance": rec.tolerance, "share": rec.share,
                "trials": [{"name": r.name, "number": r.number, "state": r.state, "params": r.params,
                            "best_val": r.best, "time_to_target_s": r.time_to(rec.target) if rec.target else None,
                            "wall_s": r.wall_s, "steps": r.steps, "step_s": r.step_s, "error": r.error,
                            "curve": [list(p) for p in r.curve]} for r in self.records]}


@dataclass
class TuneResult:
    folder: Path
    methods: list[MethodResult]
    page: Path

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "page": str(self.page), "methods": [m.to_dict() for m in self.methods]}


def require_optuna():
    """The optuna module, quiet; a clear error saying how to install it when it is missing."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("mwa tune needs Optuna, which is not installed", hint=INSTALL_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def run_tune(settings: TuneSettings, progress: ProgressFn | None = None, *, pruner: Any = None) -> TuneResult:
    """Search every method of `settings` (continuing a tune folder that holds the same search), then recommend.
    `pruner`: an Optuna pruner instead of the one --pruner names (tests)."""
    settings.validate()
    optuna = require_optuna()
    data = prepared_data(Path(settings.data_dir))
    spaces = None
    if not is_tune_folder(settings.folder):  # a new tune: its spaces, from the data and the backbone
        spaces = {m: build_space(m, settings.fixed_values(), Path(data["data_dir"])) for m in settings.methods}
    folder = open_folder(settings, data, spaces)
    try:
        repair_journal(folder.path / JOURNAL)
        with sigterm_interrupts():
            stopped = {m: search_method(optuna, folder, m, settings, progress, pruner) for m in settings.methods}
        return finish(optuna, folder, settings, stopped)
    finally:
        folder.close()


def prepared_data(data_dir: Path) -> dict[str, Any]:
    """{"data_dir", "dataset_hash"} of a prepared data dir that has a val split (trials are scored on it)."""
    from mwa_cli.data.manifest import load_dataset_info, load_manifest

    if not (data_dir / "manifest.csv").is_file():
        raise DataError(f"{data_dir} is not a prepared data directory (no manifest.csv)",
                        hint=f"prepare the photos first: mwa prepare PHOTOS --out {data_dir}")
    df = load_manifest(data_dir)
    if not (df["split"] == "val").any():
        raise DataError(f"{data_dir} has no val split: mwa tune scores every trial on it",
                        hint="re-run `mwa prepare` with a val share, e.g. --split 0.6,0.2,0.2")
    return {"data_dir": str(data_dir.resolve()), "dataset_hash": load_dataset_info(data_dir).get("dataset_hash")}


def repair_journal(path: Path) -> None:
    """Under the tune folder's lock: drop a last journal line a kill cut short (Optuna would glue the next one
    to it) and the journal's own lock file such a kill left (Optuna would wait for it)."""
    remove_temp(path.parent, [f"{JOURNAL}.lock*"])
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM between trials ends the tune like Ctrl-C (a trial's own handler saves its checkpoint first)."""
    def stop(signum, _frame) -> None:
        raise TuneInterrupted("stopped by SIGTERM between trials", exit_code=EXIT_SIGTERM,
                              hint="run the same `mwa tune` command again to continue")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def journal_storage(optuna, folder: TuneFolder):
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder.journal)))


def open_study(optuna, folder: TuneFolder, method: str, settings: TuneSettings, pruner: Any):
    storage = journal_storage(optuna, folder)
    try:  # loading first: creating an existing study would append to the journal each time
        study = optuna.load_study(study_name=method, storage=storage)
    except KeyError:
        study = optuna.create_study(study_name=method, storage=storage, direction="maximize")
        for params in folder.space(method).first_params():
            study.enqueue_trial(params)
    study.sampler = optuna.samplers.TPESampler(seed=settings.seed + len(study.trials), n_startup_trials=N_STARTUP)
    study.pruner = pruner if pruner is not None else make_pruner(optuna, folder.record["pruner"],
                                                                  folder.trial_length, study)
    return study


def rung_ladder(optuna, kind: str, length: dict[str, float | int], study: Any) -> tuple[int, int] | None:
    """The pruner's first rung and a trial's length, in milliseconds of trial time: a sixth of the length first
    (the budget; with --trial-steps, the longest finished trial's time); None: no pruning (yet)."""
    if kind == "none":
        return None
    if "budget_s" in length:
        full_ms = int(1000 * float(length["budget_s"]))
    else:
        done = [t.last_step for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.last_step is not None]
        if not done:
            return None
        full_ms = max(done)
    return max(1, int(full_ms * FIRST_RUNG)), full_ms


def rung_times_s(optuna, kind: str, length: dict[str, float | int], study: Any) -> list[float]:
    """The trial times (s) where the pruner compares trials. Every trial checks val there (`val_at`): compared
    at its next regular check instead, a trial whose check came later had trained longer (up to a check
    interval, as long as the first rung itself)."""
    ladder = rung_ladder(optuna, kind, length, study)
    if ladder is None:
        return []
    rung, full_ms = ladder
    times = []
    while rung < full_ms:
        times.append(rung / 1000)
        rung *= REDUCTION
    return times


def make_pruner(optuna, kind: str, length: dict[str, float | int], study: Any):
    """The pruner --pruner names, on the rungs of `rung_ladder` (successive halving keeps the best third)."""
    ladder = rung_ladder(optuna, kind, length, study)
    if ladder is None:
        return optuna.pruners.NopPruner()
    first, full_ms = ladder
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=max(first + 1, full_ms),
                                              reduction_factor=REDUCTION)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=REDUCTION)


def trial_values(folder: TuneFolder, method: str, params: dict[str, Any], val_at: list[float]) -> dict[str, Any]:
    """The TrainConfig values of a new trial of `method` with configuration `params`, checked at `val_at`."""
    values = {**folder.record["fixed"], **folder.space(method).train_values(params),
              "data_dir": folder.record["data_dir"], "seed": folder.record["seed"],
              "val_share": folder.record["val_share"], "val_at": val_at, "final_split": "val",
              "tune": str(folder.path.resolve())}
    length = folder.trial_length
    if "budget_s" in length:
        values["budget"] = f"{length['budget_s']:g}s"
    else:
        values["steps"] = int(length["steps"])
    return values


def search_method(optuna, folder: TuneFolder, method: str, settings: TuneSettings, progress: ProgressFn | None,
                  pruner: Any) -> str:
    """Continue the trials an interrupted run left, then run new ones until the budget or --trials; why it
    stopped."""
    study = open_study(optuna, folder, method, settings, pruner)
    running = optuna.trial.TrialState.RUNNING
    _emit(progress, "tune_method", {"method": method, "budget_s": settings.method_budget_s,
                                    "spent_s": folder.spent_s(method), "trial_length": folder.trial_length,
                                    "trials": len(_asked(optuna, study)), "folder": str(folder.path)})
    for frozen in study.get_trials(deepcopy=False, states=(running,)):
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if not frozen.params:  # stopped between drawing the trial and its configuration
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        _execute(optuna, study, trial, dict(frozen.params), folder, method, settings, progress, resumed=True)
    failures = 0
    while (why := stop_reason(optuna, study, folder, method, settings)) is None:
        if pruner is None:  # with --trial-steps the rungs follow the finished trials' times
            study.pruner = make_pruner(optuna, folder.record["pruner"], folder.trial_length, study)
        trial = study.ask()
        params = folder.space(method).suggest(trial)
        outcome = _execute(optuna, study, trial, params, folder, method, settings, progress, resumed=False)
        failures = failures + 1 if outcome.state == "failed" else 0
        if outcome.state == "failed" and trial.number == 0:
            raise MwaError(f"the first trial of {method} (its default configuration) failed: {outcome.error}",
                           hint=f"fix the cause, then run the same command again (the trial's folder: "
                                f"{folder.trials / trial_name(method, 0)})", exit_code=1)
        if failures >= MAX_FAILURES_IN_A_ROW:
            raise MwaError(f"{failures} trials of {method} in a row failed; the last: {outcome.error}",
                           hint="see the trials' folders under " + str(folder.trials), exit_code=1)
    _emit(progress, "tune_stop", {"method": method, "reason": why})
    return why


def stop_reason(optuna, study: Any, folder: TuneFolder, method: str, settings: TuneSettings) -> str | None:
    """Why no further trial starts (None: start one): --trials reached, or a trial no longer fits the budget."""
    asked = _asked(optuna, study)
    if settings.max_trials is not None and len(asked) >= settings.max_trials:
        return f"{len(asked)} trials (--trials {settings.max_trials})"
    budget = settings.method_budget_s
    if budget is None:
        return None
    spent, length = folder.spent_s(method), folder.trial_length
    expected = float(length["budget_s"]) if "budget_s" in length else (spent / len(asked) if asked else 0.0)
    left = budget - spent
    if left <= 0 or left < expected:
        return f"the budget left ({max(0.0, left):.0f} s of {budget:.0f} s) cannot hold another trial ({expected:.0f} s)"
    return None


def _asked(optuna, study: Any) -> list:
    """The trials started so far (not those enqueued and waiting)."""
    return [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]


def _execute(optuna, study: Any, trial: Any, params: dict[str, Any], folder: TuneFolder, method: str,
             settings: TuneSettings, progress: ProgressFn | None, *, resumed: bool) -> TrialOutcome:
    """Run one trial, count its time against the method's budget, tell Optuna how it ended."""
    name = trial_name(method, trial.number)
    _emit(progress, "trial", {"method": method, "number": trial.number, "name": name, "params": params,
                              "describe": describe(params), "resumed": resumed})
    t0 = time.monotonic()
    try:
        val_at = rung_times_s(optuna, folder.record["pruner"], folder.trial_length, study)
        # the enqueued references (the defaults; the top half from the cache) run whole: with a few trials at a
        # rung, successive halving keeps only the best one there, so the second would live or die on one check
        reference = trial.number < len(folder.space(method).first_params())
        outcome = run_trial(trial, method, trial_values(folder, method, params, val_at), folder.trials, progress,
                            prunable=not reference)
    finally:
        folder.add_spent(method, time.monotonic() - t0)
    state = optuna.trial.TrialState
    if outcome.state == "complete":
        study.tell(trial, outcome.value)
    else:
        if outcome.error:
            trial.set_user_attr("error", outcome.error[:2000])
        study.tell(trial, state=state.PRUNED if outcome.state == "pruned" else state.FAIL)
    _emit(progress, "trial_done", {"method": method, "name": name, "state": outcome.state, "value": outcome.value,
                                   "error": outcome.error, "seconds": time.monotonic() - t0})
    return outcome


def method_records(optuna, folder: TuneFolder, method: str) -> list[TrialRecord]:
    """Every asked trial of `method` as a TrialRecord, in trial order."""
    study = optuna.load_study(study_name=method, storage=journal_storage(optuna, folder))
    s = optuna.trial.TrialState
    states = {s.COMPLETE: "complete", s.PRUNED: "pruned", s.FAIL: "failed", s.RUNNING: "running"}
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in states:
            continue
        name = str(t.user_attrs.get("run") or trial_name(method, t.number))
        run_dir = folder.trials / name
        out.append(record_of(method, t.number, name, states[t.state], dict(t.params),
                             run_dir if run_dir.is_dir() else None, t.user_attrs.get("error")))
    return out


def finish(optuna, folder: TuneFolder, settings: TuneSettings, stopped: dict[str, str]) -> TuneResult:
    """Recommend per method, write the recommended configurations, the page and tune.json's result."""
    from mwa_cli.tune.config_file import train_command, train_values, write_config
    from mwa_cli.tune.layout import PAGE, recommended_name
    from mwa_cli.tune.page import write_page

    results = []
    for method in settings.methods:
        records = method_records(optuna, folder, method)
        rec = recommend(records, settings.tolerance, settings.share)
        path = command = None
        if rec.chosen is not None:
            chosen = folder.space(method).train_values(rec.chosen.params)
            values = train_values(folder.record["fixed"], chosen, folder.trial_length, folder.record["val_share"],
                                  folder.record["data_dir"], folder.path)
            path = write_config(folder.path / recommended_name(method), values, _comments(folder, method, rec))
            command = train_command(settings.data_dir, path)
        results.append(MethodResult(method, records, rec, path, command, folder.spent_s(method),
                                    settings.method_budget_s, stopped[method]))
    result = TuneResult(folder.path, results, folder.path / PAGE)
    write_page(result, folder.record)
    folder.record["result"] = {m.method: {k: v for k, v in m.to_dict().items() if k != "trials"} for m in results}
    folder.save()
    return result


def _comments(folder: TuneFolder, method: str, rec: Recommendation) -> list[str]:
    c = rec.chosen
    return [f"Recommended by `mwa tune` ({folder.path}) on {time.strftime('%Y-%m-%d %H:%M')}: trial {c.name}",
            f"  ({describe(c.params)}), val RSUM {c.best:.2f}; the best trial {rec.best.name}: {rec.best.best:.2f}.",
            f"  {rec.reason}.",
            "Train it with: mwa train DATA --config THIS_FILE (the seed, --name and --out are yours to set)."]


def _emit(progress: ProgressFn | None, event: str, data: dict) -> None:
    if progress is not None:
        progress(event, data)
