"""The JSON files of a run folder, read as data from outside: `read_run_file(folder, name)` and
`read_metrics_rows(path)`, used by every command that lists or reports runs (`mwa runs`, `mwa show`, `mwa report`,
`mwa train --resume`).

Each file is read with `mwa_cli.safe_open.load_json` (a regular file, a size limit, nesting at most 64 levels, no
NaN or Infinity, integers that fit 64 bits) and must be a JSON object; the numbers a listing or a verdict is made
from must lie in their declared range (a recall within 0-100 %, an RSUM within 0-600, hours and seconds neither
negative nor absurd, counts whole). A file that breaks a rule raises `BadRunFile` naming it: the run is listed as
damaged or skipped, never shown with made-up figures, and the other runs are unaffected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mwa_cli.errors import ConfigError
from mwa_cli.printable import printable
from mwa_cli.ranges import Range, out_of_range
from mwa_cli.safe_open import InputFileError, load_json, parse_json, read_text

PERCENT = Range(0, 100)
RSUM = Range(0, 600)  # six recalls of at most 100 %
RANK = Range(0, 2**53)
WHOLE = Range(0, 2**53, whole=True)
SECONDS = Range(0, 10 * 366 * 86400)  # ten years
HOURS = Range(0, 10 * 366 * 24 * 4096)  # ten years on 4,096 devices

_RECALL = {"r1": PERCENT, "r5": PERCENT, "r10": PERCENT, "median_rank": RANK, "mean_rank": RANK}
_SCORES = {"rsum": RSUM, "mean_recall": PERCENT, "n_images": WHOLE, "n_captions": WHOLE}
TIMING_RANGES = {"wall_s": SECONDS, "train_s": SECONDS, "eval_s": SECONDS, "checkpoint_s": SECONDS,
                 "steps": WHOLE, "samples": WHOLE, "planned_steps": WHOLE, "samples_per_s": Range(0, 1e9),
                 "device_hours": HOURS, "n_devices": Range(1, 4096, whole=True), "peak_mem_gib": Range(0, 1e5),
                 "data_wait_fraction": Range(0, 1e3), "budget_s": SECONDS, "trainable_params": WHOLE,
                 "total_params": WHOLE, "val_share": Range(0, 1), "val_zero_shot_s": SECONDS}
METRICS_ROW_RANGES = {"step": WHOLE, "rsum": RSUM, "time_s": SECONDS, "time_no_val_s": SECONDS,
                      "samples_per_s": Range(0, 1e9)}


class BadRunFile(ConfigError):
    """A run-folder file that is not what mwa writes (exit 2): damaged, cut short or edited by hand."""


def _bad(name: str, why: str, folder: Path) -> BadRunFile:
    """`name` is not what mwa writes: `why` is a verb phrase ("holds list, ...") or a reason ("a named pipe ...")."""
    text = f"{name} {why}" if why.startswith(("is ", "holds ")) else f"{name}: {why}"
    return BadRunFile(text, hint=f"it was damaged or changed by hand or by another program "
                                            f"({printable(folder)}); restore it, or evaluate or train the run again")


def _check_scores(d: Mapping[str, Any], where: str) -> str | None:
    """Why an eval.json-shaped dict (top level, `label_level`, one `per_label` entry) is implausible, or None."""
    bad = out_of_range(d, _SCORES)
    if bad is not None:
        return f"{where}{bad[0]} is {bad[1]!r}, not {bad[2].describe()}"
    for direction in ("i2t", "t2i"):
        block = d.get(direction)
        if block is None:
            continue
        if not isinstance(block, dict):
            return f"{where}{direction} holds {type(block).__name__}, not the object of recalls mwa writes"
        for key, rng in _RECALL.items():
            value = block.get(key)
            if key in ("r1", "r5", "r10") and value is None:
                return f"{where}{direction} has no {key}"
            if value is not None and not rng.contains(value):
                return f"{where}{direction}.{key} is {value!r}, not {rng.describe()}"
    return None


def _eval_problem(d: dict[str, Any]) -> str | None:
    why = _check_scores(d, "")
    if why is None and isinstance(d.get("label_level"), dict):
        why = _check_scores(d["label_level"], "label_level.")
    if why is None and d.get("label_level") is not None and not isinstance(d.get("label_level"), dict):
        why = "label_level is not an object"
    per_label = d.get("per_label")
    if why is None and per_label is not None:
        if not isinstance(per_label, dict) or not all(isinstance(v, dict) for v in per_label.values()):
            return "per_label is not an object of label → scores"
        why = next((w for lab, v in per_label.items() if (w := _check_scores(v, f"per_label[{lab!r}]."))), None)
    return why


def _timing_problem(d: dict[str, Any]) -> str | None:
    bad = out_of_range(d, TIMING_RANGES)
    return None if bad is None else f"{bad[0]} is {bad[1]!r}, not {bad[2].describe()}"


_CHECKS = {"eval.json": _eval_problem, "timing.json": _timing_problem}  # config.json: its options' own checks


def read_run_file(folder: str | Path, name: str, *, missing: Any = None) -> Any:
    """The JSON object `name` of the run folder `folder` (`missing` when there is no such file), checked for its
    limits (module docstring); `BadRunFile` otherwise. eval_<split>.json files are checked as eval.json."""
    folder = Path(folder)
    path = folder / name
    if not path.exists() and not path.is_symlink():
        return missing
    try:
        data = load_json(path, what=name)
    except InputFileError as exc:
        raise _bad(name, exc.reason, folder) from None
    if not isinstance(data, dict):
        raise _bad(name, f"holds {type(data).__name__}, not the object mwa writes", folder)
    check = _CHECKS.get("eval.json" if name.startswith("eval_") and name.endswith(".json") and name not in (
        "eval_topk.json", "eval_ranks.json") else name)
    why = check(data) if check is not None else None
    if why is not None:
        raise _bad(name, f"is not what mwa writes: {printable(why)[:200]}", folder)
    return data


def read_metrics_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl: each line a JSON object within the limits; a line that is not (cut by a kill,
    edited, hostile) is left out, the others kept."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = read_text(path, what=path.name)
    except InputFileError as exc:
        raise _bad(path.name, exc.reason, path.parent) from None
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = parse_json(line, max_depth=4)
        except ValueError:
            continue
        if isinstance(row, dict) and out_of_range(row, METRICS_ROW_RANGES) is None:
            rows.append(row)
    return rows
