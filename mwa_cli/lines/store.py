"""The line store on disk (layout in the package docstring, fields in docs/formats.md, "Line store"): opening and
creating it, its lines, their pointer to the current version, and each version's record, checked by sha256."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mwa_cli import __version__, integrity
from mwa_cli.errors import EXIT_DATA, ConfigError, DataError
from mwa_cli.fileio import OLD_SUFFIX, TEMP_DIR_PREFIX, atomic_dir, atomic_write_json
from mwa_cli.outdir import FolderLock, is_empty, read_marker, write_marker

SCHEMA_VERSION = 1
DEFAULT_STORE = "lines"
LINE_FILE = "line.json"
POINTER_FILE = "current.json"
VERSION_FILE = "version.json"
INDEX_DIR = "index"
NAME_LIMIT = 64
_NAME = re.compile(r"[^\W_][\w.-]*")  # letters (any script) or digits first, then letters, digits, _ . -
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def who() -> str:
    """user@host of this process (from the password database, not the environment: docs/security.md)."""
    import pwd

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def check_line_name(name: str) -> str:
    """A line name is one folder name: letters or digits first (any script), then letters, digits, `_ . -`."""
    if not isinstance(name, str) or len(name) > NAME_LIMIT or not _NAME.fullmatch(name):
        raise ConfigError(f"{name!r} cannot be a line name",
                          hint=f"use up to {NAME_LIMIT} letters, digits, '_', '.' or '-', starting with a letter or "
                               "digit, e.g. line-3 or 第3ライン")
    return name


def read_json(path: Path, what: str, hint: str) -> dict[str, Any]:
    """A JSON object mwa wrote, or a DataError (exit 3) naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is missing ({what})", hint=hint, exit_code=EXIT_DATA) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} ({what}): {exc}", hint=hint, exit_code=EXIT_DATA) from None
    if not isinstance(data, dict):
        raise DataError(f"{path} holds {type(data).__name__}, not the object mwa writes ({what})", hint=hint,
                        exit_code=EXIT_DATA)
    return data


def held_out_record(data_dir: str | Path, split: str, set_by: str) -> dict[str, Any]:
    """The line's held-out set: a prepared data dir and one of its splits, checked to be usable now."""
    from mwa_cli.data.manifest import load_dataset_info, load_manifest

    folder = Path(data_dir).expanduser().resolve()
    info = load_dataset_info(folder)
    df = load_manifest(folder)
    rows = df[df["split"] == split]
    if len(rows) == 0:
        splits = ", ".join(sorted(set(df["split"]))) or "none"
        raise DataError(f"the {split!r} split of {folder} is empty: it cannot be the line's held-out set",
                        hint=f"choose a split that has photos ({splits}) with --split", exit_code=EXIT_DATA)
    return {"data_dir": str(folder), "split": split, "dataset_hash": info.get("dataset_hash"),
            "n_images": int(rows["image_id"].nunique()), "n_captions": int(len(rows)), "set_by": set_by,
            "set_at": now()}


@dataclass
class Line:
    """One production line: line.json (`record`) and current.json (`pointer`) as read."""

    name: str
    path: Path
    record: dict[str, Any]
    pointer: dict[str, Any]

    @property
    def current(self) -> int | None:
        v = self.pointer.get("version")
        return int(v) if isinstance(v, int) else None

    @property
    def held_out(self) -> dict[str, Any] | None:
        return self.record.get("held_out")

    @property
    def backbone(self) -> dict[str, Any] | None:
        return self.record.get("backbone")

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.pointer.get("history") or [])

    @property
    def pointer_path(self) -> Path:
        return self.path / POINTER_FILE

    def version_path(self, n: int) -> Path:
        return self.path / f"v{int(n)}"

    def index_path(self, n: int) -> Path:
        return self.version_path(n) / INDEX_DIR

    def published(self) -> list[int]:
        """The versions published to this line (those the history names), oldest first."""
        return sorted({int(e["version"]) for e in self.history if e.get("action") == "publish"})

    def version(self, n: int) -> dict[str, Any]:
        """The record (version.json) of version `n`, unchecked (`verify_version` checks its files)."""
        if n not in self.published():
            raise ConfigError(f"line {self.name} has no version {n}",
                              hint=f"its versions: {', '.join(f'v{v}' for v in self.published()) or 'none yet'}")
        return read_json(self.version_path(n) / VERSION_FILE, f"version {n} of line {self.name}",
                         hint=f"restore {self.version_path(n)} from a backup, or roll the line back to another "
                              "version")

    def verify_version(self, n: int) -> dict[str, Any]:
        """Version `n`'s record after every file it lists matched its sha256 (IntegrityError, exit 6, if not)."""
        rec = self.version(n)
        integrity.verify(self.version_path(n), rec, list(integrity.recorded(rec)),
                         side_name=f"{VERSION_FILE} of line {self.name} v{n}",
                         remedy=f"restore {self.version_path(n)} from a backup, or `mwa line rollback {self.name} "
                                "VERSION` to another version, or publish the run again")
        return rec

    def next_version(self) -> int:
        taken = self.published() + [int(m.group(1)) for p in self.path.iterdir()
                                    if (m := _VERSION_DIR.fullmatch(p.name))]
        return max(taken, default=0) + 1

    def remove_leftovers(self) -> list[str]:
        """What a killed publish left (temporary folders, a version folder the history never named): removed by
        the line's next writer, under its lock."""
        removed = []
        named = set(self.published())
        for p in self.path.iterdir():
            m = _VERSION_DIR.fullmatch(p.name)
            stray = (m is not None and int(m.group(1)) not in named) or p.name.startswith(TEMP_DIR_PREFIX) or \
                (p.name.endswith(OLD_SUFFIX) and _VERSION_DIR.fullmatch(p.name[:-len(OLD_SUFFIX)]) is not None)
            if stray and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        return removed

    def write_record(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / LINE_FILE, record)
        self.record = record

    def switch(self, version: int, event: dict[str, Any]) -> None:
        """Point the line at `version` (one atomic rename: readers see the old pointer or the new one)."""
        pointer = {"schema_version": SCHEMA_VERSION, "version": int(version), "changed": event["at"],
                   "history": [*self.history, event]}
        atomic_write_json(self.pointer_path, pointer)
        self.pointer = pointer

    def lock(self) -> FolderLock:
        return FolderLock(self.path, "line", hint=f"wait for the other `mwa line` command on {self.name} to end")


class LineStore:
    """A folder of production lines (created by `mwa line add`)."""

    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def open(cls, path: str | Path) -> "LineStore":
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"no line store at {root}", hint=f"create one with `mwa line add LINE --store {path}`",
                            exit_code=EXIT_DATA)
        if read_marker(root, "lines") is None:
            raise DataError(f"{root} is not a line store (no .mwa-lines)",
                            hint="give the folder `mwa line add --store` made", exit_code=EXIT_DATA)
        return cls(root)

    @classmethod
    def create(cls, path: str | Path) -> "LineStore":
        """The store at `path`, made when the folder is new or empty; one holding other files is refused."""
        root = Path(path).expanduser().resolve()
        if read_marker(root, "lines") is None and not is_empty(root):
            names = sorted(p.name for p in root.iterdir())[:4]
            raise ConfigError(f"--store {root} holds files mwa did not write ({', '.join(names)}): nothing in it is "
                              "changed", hint="choose a new or empty folder for the line store")
        return cls(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _NAME.fullmatch(p.name) and (p / LINE_FILE).is_file())

    def line(self, name: str) -> Line:
        path = self.root / check_line_name(name)
        if not (path / LINE_FILE).is_file():
            known = ", ".join(self.names()) or "none yet"
            raise ConfigError(f"no line named {name!r} in {self.root} (lines: {known})",
                              hint=f"add it with `mwa line add {name} --store {self.root}`")
        hint = f"restore {path} from a backup"
        return Line(name, path, read_json(path / LINE_FILE, "the line's record", hint),
                    read_json(path / POINTER_FILE, "the line's current version", hint))

    def add(self, name: str, *, data_dir: str | Path | None = None, split: str = "test") -> Line:
        """A new line, with its held-out set when `data_dir` is given (else the first publish sets it)."""
        check_line_name(name)
        held = held_out_record(data_dir, split, "line add") if data_dir is not None else None
        with FolderLock(self.root, "lines", hint="wait for the other `mwa line add` to end"):
            write_marker(self.root, "lines")
            for p in self.root.glob(f"{TEMP_DIR_PREFIX}*"):  # a killed `line add`
                shutil.rmtree(p, ignore_errors=True)
            if (self.root / name).exists():
                raise ConfigError(f"line {name} already exists in {self.root}",
                                  hint=f"see it with `mwa line show {name} --store {self.root}`")
            record = {"schema_version": SCHEMA_VERSION, "name": name, "created": now(), "created_by": who(),
                      "held_out": held, "backbone": None, "mwa_version": __version__}
            pointer = {"schema_version": SCHEMA_VERSION, "version": None, "changed": record["created"],
                       "history": []}

            def fill(tmp: Path) -> None:
                atomic_write_json(tmp / LINE_FILE, record)
                atomic_write_json(tmp / POINTER_FILE, pointer)

            atomic_dir(self.root / name, fill)
        return self.line(name)
