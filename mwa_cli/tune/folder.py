"""The tune folder (docs/formats.md, "Tune folder"): created and marked by `mwa tune`, locked while it runs, and
its tune.json read back when the same command runs again, so the search continues where it stopped.

tune.json holds what the search depends on (data, methods, fixed training values, trial length, search spaces,
seed, pruner): a later run of the command must agree with it, or it is refused naming what differs. The budget,
--trials, --tolerance and --share may change between runs (more budget continues the search; the recommendation
is recomputed). It also holds the budget each method has spent.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from mwa_cli import __version__
from mwa_cli.errors import ConfigError
from mwa_cli.fileio import atomic_write_json
from mwa_cli.outdir import FolderLock, is_empty, read_marker, write_marker
from mwa_cli.tune.layout import JOURNAL, SETTINGS, TRIALS, read_settings
from mwa_cli.tune.settings import TuneSettings
from mwa_cli.tune.space import SearchSpace

# tune.json keys a later run must agree with (the search depends on them)
SEARCH_KEYS = ("data_dir", "dataset_hash", "methods", "fixed", "trial_length", "seed", "val_share", "pruner")


class TuneFolder:
    """One tune folder, locked by this process while it is open."""

    def __init__(self, path: Path, record: dict[str, Any], lock: FolderLock):
        self.path = Path(path)
        self.record = record
        self._lock = lock

    # ------------------------------------------------------------------ paths
    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    @property
    def trials(self) -> Path:
        return self.path / TRIALS

    @property
    def trial_length(self) -> dict[str, float | int]:
        return dict(self.record["trial_length"])

    def space(self, method: str) -> SearchSpace:
        raw = dict(self.record["spaces"][method])
        raw.pop("lr_range", None)
        fields = {f.name for f in dataclasses.fields(SearchSpace)}
        return SearchSpace(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields})

    # ------------------------------------------------------------------ budget
    def spent_s(self, method: str) -> float:
        return float(self.record.setdefault("spent_s", {}).get(method, 0.0))

    def add_spent(self, method: str, seconds: float) -> None:
        spent = self.record.setdefault("spent_s", {})
        spent[method] = round(float(spent.get(method, 0.0)) + seconds, 3)
        self.save()

    def save(self) -> None:
        self.record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(self.path / SETTINGS, self.record)

    def close(self) -> None:
        self._lock.release()


def open_folder(settings: TuneSettings, data: dict[str, Any], spaces: dict[str, SearchSpace] | None) -> TuneFolder:
    """Create the tune folder of `settings`, or reopen it after checking it holds the same search. `data`:
    {"data_dir", "dataset_hash"}; `spaces` are built only for a new folder (None: reopen or fail)."""
    path = settings.folder
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder", hint="pick another --name or --out")
    started = read_marker(path, "tune") is not None
    if not started and not is_empty(path):
        raise ConfigError(f"{path} exists and is not an mwa tune folder: nothing in it is changed",
                          hint="pick another --name or --out")
    lock = FolderLock(path, "tune", hint="wait for that `mwa tune` to end (or stop it), or pick another "
                                         "--name").acquire()
    try:
        record = read_settings(path) if started else {}
        if record:
            check_same_search(path, record, new_record(settings, data, {}), explicit_length=_explicit(settings))
            record["settings"] = settings.to_dict()  # budget, trials, tolerance: as asked this time
        else:  # new, or marked by a run killed before it wrote tune.json: nothing of it to keep
            if spaces is None:
                raise ConfigError(f"{path} holds no {SETTINGS}")  # pragma: no cover - callers build the spaces
            write_marker(path, "tune")
            record = new_record(settings, data, spaces)
        folder = TuneFolder(path, record, lock)
        folder.trials.mkdir(exist_ok=True)
        folder.save()
        return folder
    except BaseException:
        lock.release()
        raise


def _explicit(settings: TuneSettings) -> bool:
    return settings.trial_budget is not None or settings.trial_steps is not None


def new_record(settings: TuneSettings, data: dict[str, Any], spaces: dict[str, SearchSpace]) -> dict[str, Any]:
    """tune.json of a new tune."""
    return {"kind": "mwa tune", "mwa_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": settings.to_dict(), "data_dir": str(Path(data["data_dir"]).resolve()),
            "dataset_hash": data.get("dataset_hash"), "methods": list(settings.methods),
            "fixed": settings.fixed_values(), "trial_length": settings.trial_length(), "seed": settings.seed,
            "val_share": settings.val_share, "pruner": settings.pruner,
            "spaces": {m: s.to_dict() for m, s in spaces.items()}, "spent_s": {m: 0.0 for m in settings.methods}}


def check_same_search(path: Path, saved: dict[str, Any], asked: dict[str, Any], *, explicit_length: bool) -> None:
    """Refuse to continue a tune whose search depends on settings other than those asked now."""
    keys = [k for k in SEARCH_KEYS if k != "trial_length" or explicit_length]
    differ = [k for k in keys if _norm(saved.get(k)) != _norm(asked.get(k))]
    if differ:
        parts = "; ".join(f"{k}: {_show(saved.get(k))} then, {_show(asked.get(k))} now" for k in differ)
        raise ConfigError(f"{path} holds a tune started with other settings ({parts})"[:900],
                          hint=f"run it with the settings in {path / SETTINGS} to continue it, or give another "
                               "--name to start a new tune")


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
