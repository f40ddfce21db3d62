"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed over the target,
so a reader (or a process killed mid-write) never sees half a file. `atomic_dir` does the same for a folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to fill a temporary file, fsync it, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (the renames in it) to disk; best effort, as some filesystems refuse."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def synced_file(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` for writing ("wb", or "w" for UTF-8 text); flushed and fsync'ed when the block ends."""
    with open(path, mode, encoding=None if "b" in mode else "utf-8") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


TEMP_DIR_PREFIX = ".tmp-"  # atomic_dir's temporary folders, removed by the folder's next writer
OLD_SUFFIX = ".old"


def atomic_dir(target: str | Path, fill: Callable[[Path], None]) -> Path:
    """Replace the folder ``target`` by a complete new one: ``fill(tmp)`` writes a temporary folder beside it
    (its files synced, e.g. with `synced_file`), which is fsync'ed, then ``target`` is renamed to
    ``target.old``, the temporary folder to ``target``, and ``target.old`` is removed. A kill at any moment
    leaves ``target`` complete or, between the two renames, only ``target.old`` (readers fall back to it)."""
    target = Path(target)
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{TEMP_DIR_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(tmp)
    old = target.with_name(target.name + OLD_SUFFIX)
    if old.exists() and target.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(root)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return target


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    """numpy / torch scalars as numbers, anything else (paths, ...) as text."""
    return obj.item() if hasattr(obj, "item") else str(obj)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def json_line(obj: Any) -> str:
    """One JSON Lines row (for metrics.jsonl)."""
    return json.dumps(obj, ensure_ascii=False, default=_json_default) + "\n"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
