"""The one place where published files get their sha256 recorded and checked.

Every file mwa publishes is described by a JSON side file written after it (adapter_config.json, a checkpoint's
meta.json, index.json, dataset.json, an image cache's index); the side file's ``"files"`` maps each file's name
(relative to the side file's folder) to its sha256. Loading a file checks it first: a damaged or hand-edited file
is an `IntegrityError` (exit 6) naming the file and saying what to do, never a silent change of results. Side
files written before hashes were recorded have no ``"files"``: they load unchecked (docs/formats.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from mwa_cli.errors import IntegrityError
from mwa_cli.fileio import sha256_file

FILES_KEY = "files"
_memo: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) -> sha256: a file checked once per process


def sha256_of(path: str | Path) -> str:
    """sha256 hex digest of a file (remembered while the file's inode, size and mtime stay the same)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _memo:
        _memo[key] = sha256_file(path)
    return _memo[key]


def record(folder: str | Path, names: Iterable[str]) -> dict[str, str]:
    """``{name: sha256}`` of the files `names` in `folder`, for a side file's ``"files"``."""
    return {name: sha256_of(Path(folder) / name) for name in names}


def recorded(side: Any) -> dict[str, str]:
    """The ``"files"`` record of a parsed side file ({} when it has none: written before hashes were kept)."""
    files = side.get(FILES_KEY) if isinstance(side, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def verify(folder: str | Path, side: Any, names: Iterable[str], *, side_name: str, remedy: str) -> None:
    """Check the files `names` of `folder` against the side file's record; names it does not record are skipped
    (older side files). Raises IntegrityError naming the first file that is missing or differs."""
    files = recorded(side)
    for name in names:
        want = files.get(name)
        if want is None:
            continue
        path = Path(folder) / name
        if not path.is_file():
            raise IntegrityError(f"{path} is missing, but {side_name} records it", hint=remedy)
        have = sha256_of(path)
        if have != want:
            raise IntegrityError(
                f"{path} is damaged or was changed after mwa wrote it: its sha256 is {have[:12]}…, "
                f"{side_name} records {want[:12]}…", hint=remedy)


class HashingWriter:
    """A binary file wrapper that hashes what is written through it (one pass instead of writing then reading).
    `error` keeps a failed write's OSError (a full disk), which torch.save would turn into an opaque message."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self._digest = hashlib.sha256()
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        try:
            return self.raw.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.raw.flush()

    def fileno(self) -> int:
        return self.raw.fileno()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
