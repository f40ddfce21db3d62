"""The folders mwa writes (run folders, data directories, search indexes, exports), one set of rules for all of them.

A folder is created by mwa and marked as its own (a small JSON marker file); it is locked (``flock`` on its
``.lock``) by the one process writing it, so a second writer is refused with a clear message; a folder that is
not mwa's is never written into; the temporary files a killed writer left are removed by the next writer, under
the lock. docs/formats.md, "Rules", lists them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from mwa_cli import __version__
from mwa_cli.errors import ConfigError
from mwa_cli.fileio import atomic_write_json
from mwa_cli.safe_open import InputFileError, load_json, read_text

MARKERS = {"run": ".mwa-run", "data": ".mwa-data", "index": ".mwa-index", "lines": ".mwa-lines",
           "export": ".mwa-export", "tune": ".mwa-tune"}
LOCK = ".lock"
WHAT = {"run": "run folder", "data": "data directory", "index": "search index", "lines": "line store",
        "line": "production line", "export": "export folder", "tune": "tune folder"}


def read_marker(path: Path, kind: str) -> dict[str, Any] | None:
    """The marker of an mwa folder of this kind (a dict), or None when the folder has none."""
    try:
        data = load_json(Path(path) / MARKERS[kind])
    except InputFileError:
        return None
    return data if isinstance(data, dict) else {}


def write_marker(path: Path, kind: str, **fields: Any) -> None:
    atomic_write_json(Path(path) / MARKERS[kind], {"kind": kind, "mwa_version": __version__, **fields})


def is_empty(path: Path) -> bool:
    """No folder, or one holding nothing but mwa's own lock file and a half-written marker: a process killed
    between taking the lock and marking the folder (or while marking it) leaves only those, and the same command
    run again must find the folder free."""
    path = Path(path)
    if not path.is_dir():
        return True
    return all(_is_mwa_lock(entry) if entry.name == LOCK else _is_marker_temp(entry.name) for entry in path.iterdir())


def _is_marker_temp(name: str) -> bool:
    """The temporary file `atomic_write` fills before it becomes a marker (``.<marker>.<random>.tmp``)."""
    return name.endswith(".tmp") and any(name.startswith(f"{marker}.") for marker in MARKERS.values())


def _is_mwa_lock(path: Path) -> bool:
    try:
        text = read_text(path, limit=256)
    except InputFileError:
        return False
    return text == "" or (text.startswith("mwa process ") and text[len("mwa process "):].isdigit())


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.lock``, held until `release` or the process ends (a
    killed process's lock is released by the kernel). The file holds "mwa process PID" for the message."""

    def __init__(self, folder: Path, kind: str, hint: str | None = None):
        self.folder = Path(folder)
        self.kind = kind
        self.hint = hint or "wait for that command to end (or stop it), or choose another folder"
        self._file: TextIO | None = None

    def acquire(self) -> "FolderLock":
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held until release / exit
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ConfigError(f"{WHAT[self.kind]} {self.folder} is being written by {holder}",
                              hint=self.hint) from None
        f.seek(0)
        f.truncate()
        f.write(f"mwa process {os.getpid()}")
        f.flush()
        self._file = f
        _held.append(self)
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self in _held:
            _held.remove(self)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_held: list[FolderLock] = []  # locks this process holds, oldest first


@contextlib.contextmanager
def released_on_exit() -> Iterator[None]:
    """Release every lock taken inside the block when it ends, however it ends (a function called in-process,
    e.g. `train`, then leaves no folder locked behind)."""
    before = len(_held)
    try:
        yield
    finally:
        for lock in _held[before:][::-1]:
            lock.release()


def remove_temp(folder: Path, patterns: Iterable[str]) -> list[str]:
    """Delete what a killed writer left in `folder` (files or folders matching the glob `patterns`); call it only
    while holding the folder's lock. Returns the names removed."""
    removed = []
    for pattern in patterns:
        for p in Path(folder).glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
