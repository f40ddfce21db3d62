"""Your own defaults for the report's assumptions (`mwa settings`), kept in your config folder.

The file is ``settings.toml`` in ``$MWA_CONFIG_HOME`` when set, else in ``$XDG_CONFIG_HOME/mwa`` (default
``~/.config/mwa``): one ``key = value`` line per setting, keys spelled like the report's options. A value given on
the command line always wins; a setting left unset keeps mwa's default. Every value is checked when it is set and
when the file is read (a file edited by hand included), so a bad one is refused with the key and the file named.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mwa_cli.errors import ConfigError

SETTINGS_FILE = "settings.toml"


@dataclass(frozen=True)
class Setting:
    key: str  # as the report's option, without the dashes in front
    help: str
    default: Any
    parse: Callable[[str], Any]  # text typed after `mwa settings set KEY`
    check: Callable[[Any], str | None]  # a sentence saying what is wrong, or None


def _number(text: str) -> float:
    return float(text)


def _integer(text: str) -> int:
    return int(text)


def _in_range(low: float, high: float, integer: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"must be {'a whole number' if integer else 'a number'}"
        if not math.isfinite(value) or not low <= value <= high:
            return f"must be between {low:g} and {high:g}"
        return None
    return check


def _currency(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip() or len(value) > 16 or not value.isprintable():
        return "must be a currency name or symbol of 1 to 16 printable characters, e.g. USD, EUR, JPY"
    return None


def _language(value: Any) -> str | None:
    from mwa_cli.report.i18n import LANGS

    return None if value in LANGS else f"must be one of {', '.join(LANGS)}"


SETTINGS: dict[str, Setting] = {s.key: s for s in (
    Setting("gpu-cost", "price of one device-hour (GPU-hour; CPU-hour for CPU runs)", 2.5, _number,
            _in_range(0, 1e6)),
    Setting("currency", "currency of gpu-cost", "USD", str, _currency),
    Setting("lines", "production lines / product variants, one model each", 10, _integer,
            _in_range(1, 1e6, integer=True)),
    Setting("retrains-per-year", "retrains of each line's model per year", 12, _integer,
            _in_range(0, 1e4, integer=True)),
    Setting("lang", "language of the report's own text (en or ja)", "en", str, _language),
)}


def settings_path() -> Path:
    """Where the settings file is (it may not exist yet)."""
    home = os.environ.get("MWA_CONFIG_HOME")
    if home:
        return Path(home).expanduser() / SETTINGS_FILE
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "mwa" / SETTINGS_FILE


def _setting(key: str) -> Setting:
    name = key.strip().lstrip("-").replace("_", "-").lower()
    if name not in SETTINGS:
        raise ConfigError(f"unknown setting {key!r}", hint=f"the settings are {', '.join(SETTINGS)}")
    return SETTINGS[name]


def _read_raw(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read your settings file {path}: {exc}",
                          hint="fix it or delete it (`mwa settings path` shows where it is)") from None


def _checked(setting: Setting, value: Any, where: str) -> Any:
    problem = setting.check(value)
    if problem:
        raise ConfigError(f"setting {setting.key} {problem} (got {value!r}{where})",
                          hint=f"e.g. mwa settings set {setting.key} {setting.default}, or mwa settings unset "
                               f"{setting.key}")
    return value


def load_settings(path: Path | None = None) -> dict[str, Any]:
    """The settings stored in the file (checked), by key; an absent file holds none."""
    path = path or settings_path()
    stored = {}
    for key, value in _read_raw(path).items():
        if key not in SETTINGS:
            raise ConfigError(f"unknown setting {key!r} in {path}", hint=f"mwa settings unset {key}; the settings "
                              f"are {', '.join(SETTINGS)}")
        stored[key] = _checked(SETTINGS[key], value, f" in {path}")
    return stored


def effective_settings(path: Path | None = None) -> list[dict[str, Any]]:
    """Every setting with the value in force and where it comes from ("settings" or "default")."""
    stored = load_settings(path)
    return [{"key": s.key, "value": stored.get(s.key, s.default),
             "source": "settings" if s.key in stored else "default", "help": s.help} for s in SETTINGS.values()]


def _write(path: Path, values: dict[str, Any]) -> None:
    from mwa_cli.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# mwa settings: written by `mwa settings set` (options on the command line win)"]
    lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in values.items()]  # JSON scalars are TOML
    atomic_write_text(path, "\n".join(lines) + "\n")


def set_setting(key: str, text: str, path: Path | None = None) -> Any:
    """Store `key` = `text` (parsed and checked first: a bad value leaves the file as it was); returns the value."""
    setting = _setting(key)
    try:
        value = setting.parse(str(text).strip())
    except ValueError:
        raise ConfigError(f"setting {setting.key}: {text!r} is not a value it takes",
                          hint=f"e.g. mwa settings set {setting.key} {setting.default}") from None
    _checked(setting, value, "")
    path = path or settings_path()
    values = load_settings(path)
    values[setting.key] = value
    _write(path, values)
    return value


def unset_setting(key: str, path: Path | None = None) -> bool:
    """Forget `key` (also one the file should not hold); True when it was set."""
    path = path or settings_path()
    raw = _read_raw(path)
    name = key.strip().lstrip("-").replace("_", "-").lower()
    if name not in raw:
        _setting(key)  # an unknown key is refused; a known one that was not set is fine
        return False
    del raw[name]
    _write(path, raw)
    return True


def resolve(given: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """The options of a command by setting key: the value given (not None) wins, then the stored setting, then
    mwa's default. Only the settings file is read, and only when a value is missing."""
    missing = [k for k, v in given.items() if v is None]
    stored = load_settings(path) if missing else {}
    for key, value in given.items():
        if value is not None and (problem := SETTINGS[key].check(value)):
            raise ConfigError(f"--{key} {problem} (got {value!r})")
    return {k: (v if v is not None else stored.get(k, SETTINGS[k].default)) for k, v in given.items()}


def report_settings(path: Path | None = None) -> dict[str, Any]:
    """`make_report`'s assumptions and language from the settings (`mwa demo`, which has no such options)."""
    from mwa_cli.report.roi import Assumptions

    v = resolve({k: None for k in SETTINGS}, path)
    return {"assumptions": Assumptions(gpu_cost_per_hour=float(v["gpu-cost"]), currency=v["currency"],
                                       lines=int(v["lines"]), retrains_per_year=int(v["retrains-per-year"])),
            "lang": v["lang"]}
