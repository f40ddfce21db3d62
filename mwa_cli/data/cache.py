"""The image cache: every used photo pre-resized to S×S, uint8 [N,S,S,3] raw file + JSON index.

Files (in `<data_dir>/cache/`): `images_<S>.u8` (C-contiguous RGB rows, read with numpy.memmap) and
`images_<S>.json` = {"size": S, "count": N, "ids": [image_id, ...]}. Rows are keyed by content hash, so a
rebuild reuses every row whose photo has not changed. Both files are written to a temporary name and then
moved into place with os.replace (the .u8 first, the index last), so a reader never sees a half-written cache.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from mwa_cli import integrity
from mwa_cli.data import images as _img
from mwa_cli.data.manifest import load_dataset_info, load_manifest
from mwa_cli.errors import DataError, IntegrityError
from mwa_cli.fileio import atomic_write, atomic_write_json
from mwa_cli.outdir import remove_temp
from mwa_cli.safe_open import InputFileError, load_json

# Below this many files the pool's start-up costs more than it saves.
_POOL_MIN_FILES = 24
# written only under `cache_lock`: a cache build's staging file, write_cache's temporary array and index
TEMP_PATTERNS = (".caching_*", ".images_*.tmp")
# progress(done, total): once with done 0 before the first photo, then after each; the command layer draws it
ProgressCallback = Callable[[int, int], None]


class ImageCache:
    """A read-only view of one cache size: `.size`, `.ids`, `.index_of(image_id)`, `.array` memmap [N,S,S,3]."""

    def __init__(self, data_dir: Path, size: int):
        self.data_dir = Path(data_dir)
        self.size = int(size)
        self.index_path = cache_index_path(self.data_dir, self.size)
        self.array_path = cache_array_path(self.data_dir, self.size)
        try:
            index = load_json(self.index_path)
        except InputFileError as exc:
            raise DataError(f"image cache index {self.index_path} is unreadable ({exc.reason})",
                            hint="delete the cache folder and re-run `mwa prepare`") from None
        if not isinstance(index, dict) or not isinstance(index.get("ids"), list):
            raise DataError(f"image cache index {self.index_path} is not what mwa writes",
                            hint="delete the cache folder and re-run `mwa prepare`")
        self.ids: list[str] = list(index["ids"])
        if int(index["size"]) != self.size or int(index["count"]) != len(self.ids):
            raise DataError(f"image cache index {self.index_path} is inconsistent",
                            hint="delete the cache folder and re-run `mwa prepare`")
        expected = len(self.ids) * self.size * self.size * 3
        actual = self.array_path.stat().st_size if self.array_path.exists() else -1
        if actual != expected:
            raise DataError(f"image cache {self.array_path} has {actual} bytes, expected {expected}",
                            hint="delete the cache folder and re-run `mwa prepare`")
        integrity.verify(self.array_path.parent, index, [self.array_path.name], side_name=self.index_path.name,
                         remedy="delete the cache folder and re-run `mwa prepare` (or the command again: a missing "
                                "cache is rebuilt from the photos)")
        self._pos = {i: n for n, i in enumerate(self.ids)}
        if self.ids:
            self.array = np.memmap(self.array_path, dtype=np.uint8, mode="r",
                                   shape=(len(self.ids), self.size, self.size, 3))
        else:
            self.array = np.zeros((0, self.size, self.size, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, image_id: str) -> int:
        try:
            return self._pos[image_id]
        except KeyError:
            raise DataError(f"image {image_id} is not in the {self.size}px cache",
                            hint="re-run `mwa prepare` on the photos folder") from None

    def get(self, image_id: str) -> np.ndarray:
        return np.asarray(self.array[self.index_of(image_id)])


def cache_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "cache"


def cache_index_path(data_dir: Path, size: int) -> Path:
    return cache_dir(data_dir) / f"images_{int(size)}.json"


def cache_array_path(data_dir: Path, size: int) -> Path:
    return cache_dir(data_dir) / f"images_{int(size)}.u8"


def try_open(data_dir: Path, size: int) -> ImageCache | None:
    """The existing cache of this size, or None when missing or damaged."""
    if not cache_index_path(data_dir, size).exists():
        return None
    try:
        return ImageCache(data_dir, size)
    except (DataError, IntegrityError, KeyError, ValueError, OSError):
        return None


# ------------------------------------------------------------------------------------------- decoding pool
def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def decode_files(
    files: Sequence[tuple[str, str, str | None]],
    size: int,
    staging_path: Path,
    *,
    max_pixels: int = _img.DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> list[dict]:
    """Decode `files` [(abs_path, rel_path, expected_image_id or None)] into row i of a staging memmap, calling
    `progress(done, len(files))` as photos finish.

    Returns one result dict per file (see images.process_file), in input order.
    """
    n = len(files)
    staging_path = Path(staging_path)
    staging_path.parent.mkdir(parents=True, exist_ok=True)
    reserve_file(staging_path, max(n, 1) * size * size * 3)
    tasks = [(i, a, r, size, int(max_pixels), str(staging_path), max(n, 1), e) for i, (a, r, e) in enumerate(files)]
    workers = min(workers or default_workers(), default_workers())  # more processes than cores only thrash
    results: list[dict | None] = [None] * n
    report = progress if progress and n > 0 else None
    if report:
        report(0, n)
    if workers <= 1 or n < _POOL_MIN_FILES:
        for done, t in enumerate(tasks, start=1):
            results[t[0]] = _img.process_file(t)
            if report:
                report(done, n)
        _img._MEMMAPS.clear()
    else:
        chunk = max(1, min(32, n // (workers * 8)))
        for done, res in enumerate(pool_map(_img.process_file, tasks, workers=workers, chunksize=chunk), start=1):
            results[res["row"]] = res
            if report:
                report(done, n)
    return results  # type: ignore[return-value]


def reserve_file(path: Path, nbytes: int) -> None:
    """Create `path` with `nbytes` allocated on the disk: a memory-mapped file written later can then never hit a
    full disk (which kills the writer with SIGBUS); a full disk is an OSError (ENOSPC) here instead."""
    with open(path, "wb") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, nbytes)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            fh.truncate(nbytes)  # a filesystem that cannot reserve space: a sparse file, as before
        except AttributeError:  # pragma: no cover - no posix_fallocate (not Linux)
            fh.truncate(nbytes)


def _ignore_sigint() -> None:
    """Pool worker start: Ctrl-C is the parent's to handle (it stops the pool); a worker prints no traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def pool_map(fn: Callable, tasks: Sequence, *, workers: int, chunksize: int) -> Iterator:
    """`fn` over `tasks` in a pool of worker processes, results in order. When the caller stops (Ctrl-C, an error)
    the pool stops at once: pending tasks are cancelled and the workers ended, never waited for. A pool broken by a
    worker's death raises BrokenProcessPool with `exit_codes` (the workers' exit codes: a signal is negative)."""
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint)
    procs: dict = {}
    try:
        results = pool.map(fn, tasks, chunksize=chunksize)
        procs.update(getattr(pool, "_processes", None) or {})
        yield from results
    except BaseException as exc:
        procs.update(getattr(pool, "_processes", None) or {})
        if isinstance(exc, BrokenProcessPool):
            reaped_by = time.monotonic() + 2.0  # a dead worker may not be reaped yet on a busy machine: its code
            for p in procs.values():          # is the cause the user is told
                p.join(timeout=max(0.0, reaped_by - time.monotonic()))
            exc.exit_codes = [p.exitcode for p in procs.values() if p.exitcode is not None]  # type: ignore[attr-defined]
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs.values():
            if p.is_alive():
                p.terminate()
        raise
    pool.shutdown()


def write_cache(data_dir: Path, size: int, ids: Sequence[str], row_source: Callable[[str], np.ndarray]) -> ImageCache:
    """Write images_<S>.u8 + .json for `ids` (in that order), rows from `row_source(id)`; atomic."""
    cdir = cache_dir(data_dir)
    cdir.mkdir(parents=True, exist_ok=True)
    arr_path = cache_array_path(data_dir, size)
    digest: dict[str, str] = {}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as raw:
            fh = integrity.HashingWriter(raw)
            for image_id in ids:
                row = np.ascontiguousarray(row_source(image_id), dtype=np.uint8)
                if row.shape != (size, size, 3):
                    raise ValueError(f"cache row for {image_id} has shape {row.shape}")
                fh.write(row.tobytes())
        digest[arr_path.name] = fh.hexdigest()

    atomic_write(arr_path, write)  # the array first, the index that names it last
    atomic_write_json(cache_index_path(data_dir, size), {"size": int(size), "count": len(ids), "ids": list(ids),
                                                         integrity.FILES_KEY: digest})
    integrity.stamp(cdir, digest)  # hashed while written: the next command need not read it
    return ImageCache(data_dir, size)


def unique_images(df) -> list[tuple[str, str]]:
    """(image_id, path) for each distinct image in manifest order (first path wins)."""
    seen: dict[str, str] = {}
    for image_id, path in zip(df["image_id"], df["path"]):
        if image_id not in seen:
            seen[image_id] = path
    return list(seen.items())


@contextlib.contextmanager
def cache_lock(data_dir: Path):
    """An exclusive lock on the cache folder while it is (re)built, so that several processes (e.g. one per
    GPU) asking for the same size build it once; a no-op where fcntl is missing."""
    cdir = cache_dir(data_dir)
    cdir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(cdir / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_cache(data_dir: Path, size: int, *, progress: ProgressCallback | None = None,
                 workers: int | None = None) -> ImageCache:
    """The S×S cache for this data dir; builds it (reusing rows of any older cache) from the photos in
    dataset.json's `source` when missing or out of date, calling `progress(done, total)` while it decodes.
    Safe to call from several processes at once."""
    data_dir = Path(data_dir)
    size = int(size)
    if size < 8 or size > 4096:
        raise DataError(f"image size {size} is out of range (8–4096)")
    df = load_manifest(data_dir)
    wanted = unique_images(df)
    ids = [i for i, _ in wanted]
    existing = try_open(data_dir, size)
    if existing is not None and existing.ids == ids:
        return existing
    with cache_lock(data_dir):
        return _build_cache(data_dir, size, wanted, progress=progress, workers=workers)


def _build_cache(data_dir: Path, size: int, wanted: list[tuple[str, str]], *, progress: ProgressCallback | None,
                 workers: int | None) -> ImageCache:
    ids = [i for i, _ in wanted]
    existing = try_open(data_dir, size)  # again, under the lock: another process may have built it
    if existing is not None and existing.ids == ids:
        return existing
    info = load_dataset_info(data_dir)
    source = Path(info["source"])
    max_pixels = int((info.get("settings") or {}).get("max_pixels") or _img.DEFAULT_MAX_PIXELS)
    reuse = {} if existing is None else {i: n for n, i in enumerate(existing.ids)}
    todo = [(str(source / p), p, i) for i, p in wanted if i not in reuse]
    if todo and not source.is_dir():
        raise DataError(f"the {size}px image cache must be built, but the photos folder {source} is gone",
                        hint="re-run `mwa prepare` with the photos folder, or restore it")
    remove_temp(cache_dir(data_dir), TEMP_PATTERNS)  # a killed build's files: under the cache lock, nobody's
    staging = cache_dir(data_dir) / f".caching_{size}_{uuid.uuid4().hex[:8]}.u8"
    try:
        results = decode_files(todo, size, staging, max_pixels=max_pixels, workers=workers,
                               progress=progress) if todo else []
        bad = [r for r in results if "reject" in r]
        if bad:
            listing = "; ".join(f"{r['rel']}: {r['reject']}" for r in bad[:5])
            raise DataError(f"{len(bad)} photo(s) in {source} can no longer be used for the {size}px cache: {listing}",
                            hint="re-run `mwa prepare` on the photos folder")
        staged = {todo[r["row"]][2]: r["row"] for r in results}
        mm = (np.memmap(staging, dtype=np.uint8, mode="r", shape=(max(len(todo), 1), size, size, 3))
              if todo else None)

        def row_source(image_id: str) -> np.ndarray:
            if image_id in staged:
                return mm[staged[image_id]]
            return existing.array[reuse[image_id]]

        cache = write_cache(data_dir, size, ids, row_source)
        mm = None  # release the staging map before it is removed
    finally:
        if staging.exists():
            staging.unlink()
    return cache
