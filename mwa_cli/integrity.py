"""The one place where published files get their sha256 recorded and checked.

Every file mwa publishes is described by a JSON side file written after it (adapter_config.json, a checkpoint's
meta.json, index.json, dataset.json, an image cache's index); the side file's ``"files"`` maps each file's name
(relative to the side file's folder) to its sha256. Loading a file checks it first: a damaged or hand-edited file
is an `IntegrityError` (exit 6) naming the file and saying what to do, never a silent change of results. Side
files written before hashes were recorded have no ``"files"``: they load unchecked (docs/formats.md).

Reading a multi-GB file for its hash on every command would cost seconds, so each folder keeps a stamp file
(`STAMP_FILE`): for each file checked (or written) by mwa, its sha256 and identity (inode, size, mtime, ctime).
A later process that finds the same identity and the recorded sha256 skips reading the file; any change,
including an edit that sets the mtime back, changes the ctime and forces a full re-hash. The stamp guards
against accidents and casual edits, not against someone who rewrites it too (docs/security.md).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from mwa_cli.errors import IntegrityError
from mwa_cli.fileio import atomic_write_json, sha256_file
from mwa_cli.safe_open import InputFileError, load_json

FILES_KEY = "files"
STAMP_FILE = ".mwa-verified.json"  # per folder: the files whose sha256 was checked, and what they looked like then
STAMP_VERSION = 1
RACY_NS = 100_000_000  # a file changed this recently (or later) may change again within its ctime's clock tick
_memo: dict[tuple, str] = {}  # (path, inode, size, mtime_ns, ctime_ns) -> sha256: a file read once per process


def file_identity(st: os.stat_result) -> dict[str, int]:
    """What must stay the same for a checked file to count as unchanged. ctime is set by the kernel on every
    write, rename or metadata change and cannot be set back (unlike mtime), so an edit always shows."""
    return {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def sha256_of(path: str | Path) -> str:
    """sha256 hex digest of a file (remembered while the file's inode, size, mtime and ctime stay the same)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), *file_identity(st).values())
    if key not in _memo:
        _memo[key] = sha256_file(path)
    return _memo[key]


def read_stamps(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The folder's stamps ({} when there are none, or the file is unreadable or not what mwa writes)."""
    try:
        data = load_json(Path(folder) / STAMP_FILE)
    except InputFileError:
        return {}
    files = data.get(FILES_KEY) if isinstance(data, dict) and data.get("version") == STAMP_VERSION else None
    return {str(k): v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def stamp(folder: str | Path, hashes: dict[str, str]) -> None:
    """Remember that the files `hashes` names in `folder` have these sha256 as they are now (identity from
    `file_identity`), so a later process skips reading them. For files mwa has just written and hashed while
    writing; a folder that cannot be written (read-only) just keeps re-hashing."""
    fresh = {}
    for name, digest in hashes.items():
        try:
            fresh[name] = {"sha256": digest, **file_identity((Path(folder) / name).stat())}
        except OSError:
            continue
    _write_stamps(Path(folder), fresh)


def _write_stamps(folder: Path, fresh: dict[str, dict[str, Any]]) -> None:
    if not fresh:
        return
    files = {k: v for k, v in read_stamps(folder).items() if (folder / k).exists()}
    files.update(fresh)
    try:
        atomic_write_json(folder / STAMP_FILE, {"version": STAMP_VERSION, FILES_KEY: dict(sorted(files.items()))})
    except OSError:
        pass  # a read-only folder (or a full disk): the stamp only saves time, the check itself was done


def record(folder: str | Path, names: Iterable[str]) -> dict[str, str]:
    """``{name: sha256}`` of the files `names` in `folder` (which mwa has just written), for a side file's
    ``"files"``; the files are stamped as checked too."""
    hashes = {name: sha256_of(Path(folder) / name) for name in names}
    stamp(folder, hashes)
    return hashes


def recorded(side: Any) -> dict[str, str]:
    """The ``"files"`` record of a parsed side file ({} when it has none: written before hashes were kept)."""
    files = side.get(FILES_KEY) if isinstance(side, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def verify(folder: str | Path, side: Any, names: Iterable[str], *, side_name: str, remedy: str) -> None:
    """Check the files `names` of `folder` against the side file's record; names it does not record are skipped
    (older side files). Raises IntegrityError naming the first file that is missing or differs.

    A file whose stamp (`stamp`) holds the recorded sha256 and the file's current identity is not read again;
    one that is read and matches is stamped, unless it changed within RACY_NS of the check (it could change
    again without its identity showing it)."""
    folder = Path(folder)
    files = recorded(side)
    stamps = read_stamps(folder)
    fresh: dict[str, dict[str, Any]] = {}
    for name in names:
        want = files.get(name)
        if want is None:
            continue
        path = folder / name
        try:
            st = path.stat()
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"{path} is missing, but {side_name} records it", hint=remedy)
        identity = file_identity(st)
        if stamps.get(name) == {"sha256": want, **identity}:
            continue
        started = time.time_ns()
        have = sha256_of(path)
        if have != want:
            raise IntegrityError(
                f"{path} is damaged or was changed after mwa wrote it: its sha256 is {have[:12]}…, "
                f"{side_name} records {want[:12]}…", hint=remedy)
        if st.st_ctime_ns < started - RACY_NS and file_identity(path.stat()) == identity:
            fresh[name] = {"sha256": have, **identity}
    _write_stamps(folder, fresh)


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
