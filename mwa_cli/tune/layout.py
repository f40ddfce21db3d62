"""Where a tune folder keeps its files (docs/formats.md, "Tune folder"). Torch- and Optuna-free: the report reads
these names to link a tune's page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SETTINGS = "tune.json"  # what was asked, the search space, the budget spent so far
JOURNAL = "optuna.journal"  # Optuna's journal file storage: one study per method
PAGE = "tune.html"  # every trial's val curve, the chosen one marked
TRIALS = "trials"  # one `mwa train` run folder per trial


def trial_name(method: str, number: int) -> str:
    """The run folder name of trial `number` of `method`'s study: mwa-t003."""
    return f"{method}-t{number:03d}"


def recommended_name(method: str) -> str:
    return f"recommended-{method}.toml"


def is_tune_folder(path: Path) -> bool:
    return (Path(path) / SETTINGS).is_file()


def tune_folder_of(run_path: Path, config: dict[str, Any]) -> Path | None:
    """The tune folder a run came from: a trial's (it lies in <tune>/trials/), or the one whose recommendation it
    was trained with (config.json "tune"); None otherwise or when that folder is gone."""
    trial_parent = Path(run_path).parent
    if trial_parent.name == TRIALS and is_tune_folder(trial_parent.parent):
        return trial_parent.parent
    named = config.get("tune")
    if isinstance(named, str) and named:
        for cand in (Path(named), Path(run_path).parent / named, Path(run_path).parent.parent / named):
            if is_tune_folder(cand):
                return cand
    return None


def read_settings(folder: Path) -> dict[str, Any]:
    """tune.json as a dict ({} when missing or not a JSON object)."""
    try:
        data = json.loads((Path(folder) / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
