"""The recommendation as a file `mwa train --config` reads (TOML: the train options of the chosen trial, with
comments that say where they came from), and the command that trains it."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

from mwa_cli.fileio import atomic_write_text


def train_values(fixed: dict[str, Any], chosen: dict[str, Any], length: dict[str, float | int], val_share: float,
                 data_dir: str, tune_folder: Path) -> dict[str, Any]:
    """The options of the recommended run: the trials' fixed values, the chosen configuration, the trials' length
    and validation share (the recommendation was measured with them), the data and the tune folder it came from.
    Not the seed, name, output folder or final split: those are the user's (the trials evaluated on val)."""
    values = {"data_dir": data_dir, **fixed, **chosen}
    if "budget_s" in length:
        values["budget"] = f"{length['budget_s']:g}s"
    else:
        values["steps"] = int(length["steps"])
    values["val_share"] = val_share
    values["tune"] = str(Path(tune_folder).resolve())
    if values.get("feature_cache") == "off":
        values.pop("feature_cache")  # the default: the file says only what differs
    if values.get("compile") is False:
        values.pop("compile")
    if values.get("device") == "auto":
        values.pop("device")
    return {k: v for k, v in values.items() if v is not None}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML has no value for {value!r}")
        return repr(value)
    if isinstance(value, str):
        # a JSON string is a TOML basic string (same escapes), once DEL, which TOML also escapes, is escaped too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def to_toml(values: dict[str, Any], comments: list[str] = ()) -> str:
    """TOML text of flat values, one level of tables (dicts: method_options) after them; `comments` first."""
    lines = [f"# {' '.join(c.splitlines())}" for c in comments]
    tables = {k: v for k, v in values.items() if isinstance(v, dict)}
    for key, value in values.items():
        if key not in tables:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables.items():
        lines.append(f"\n[{key}]")
        lines.extend(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def write_config(path: Path, values: dict[str, Any], comments: list[str]) -> Path:
    atomic_write_text(path, to_toml(values, comments))
    return path


def train_command(data_arg: str, path: Path) -> str:
    """The command that trains the recommended configuration."""
    return f"mwa train {shlex.quote(str(data_arg))} --config {shlex.quote(str(path))}"
