"""The pixels of one `mwa prepare`: each captioned photo's record, reused from the last prepare or decoded now.

A record is {"stat": [size, mtime_ns]} plus either "reject" (a reason) or image_id/width/height/frames, and
"staged" (its row in this prepare's staging file) when decoded now. cache/files.json keeps the records (less
"staged") for the next prepare: a photo whose stat is unchanged, or whose content hash is already in the cache, is
not decoded again. The cache is written from the staged rows and the rows of the cache it replaces.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from mwa_cli.data import cache as _cache
from mwa_cli.data.images import content_id
from mwa_cli.fileio import atomic_write_json
from mwa_cli.safe_open import PHOTO_LIMIT, InputFileError, load_json, read_bytes

STAGING = "staging_"  # decoded photos of one prepare, before they become the cache (cache/.staging_*)
FILE_INDEX = "files.json"

Record = dict  # see the module docstring


@dataclass(frozen=True)
class DecodePlan:
    """Which captioned photos keep their last record and which are decoded, with the cache being replaced."""
    reused: dict[str, Record]                  # photo key -> its record from the last prepare
    todo: list[tuple[str, str, None]]          # (absolute path, relative path, None), as decode_files takes them
    stats: dict[str, list[int] | None]         # relative path -> [size, mtime_ns], taken before decoding
    existing: _cache.ImageCache | None         # the cache of this size that the new one replaces
    in_cache: dict[str, int]                   # image_id -> its row in `existing`


@dataclass(frozen=True)
class Photos:
    """Every captioned photo's record: the reused ones first, then those decoded now (the order files.json keeps)."""
    plan: DecodePlan
    records: dict[str, Record]                 # photo key -> record

    def decoded_now(self, keys: Sequence[str]) -> bool:
        """Whether any of `keys` (photos of one content) was decoded by this prepare."""
        return any("staged" in self.records[k] for k in keys)


def _load_file_index(out_dir: Path, root: Path, max_pixels: int) -> tuple[dict, dict]:
    """(path -> record for this photos folder, image_id -> record for any folder) from cache/files.json."""
    path = _cache.cache_dir(out_dir) / FILE_INDEX
    try:
        idx = load_json(path)
    except InputFileError:
        return {}, {}
    entries = idx.get("entries") if isinstance(idx, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        return {}, {}  # not what mwa writes: decode everything again
    by_id = {v["image_id"]: v for v in entries.values() if v.get("image_id") and not v.get("reject")}
    if idx.get("source") != str(root):
        return {}, by_id
    if idx.get("max_pixels") != max_pixels:  # rejections may change with the cap: keep only good entries
        entries = {k: v for k, v in entries.items() if not v.get("reject")}
    return entries, by_id


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def plan_decoding(out: Path, root: Path, files: Mapping[str, str], captioned: Sequence[str], size: int,
                  max_pixels: int) -> DecodePlan:
    """Sort the `captioned` photos (keys into `files`, key -> relative path) into reused and to be decoded."""
    old_index, known_ids = _load_file_index(out, root, max_pixels)
    existing = _cache.try_open(out, size)
    in_cache = {} if existing is None else {i: n for n, i in enumerate(existing.ids)}
    reused: dict[str, Record] = {}
    todo: list[tuple[str, str, None]] = []
    stats: dict[str, list[int] | None] = {}
    for key in captioned:
        rel = files[key]
        st = stats[rel] = _stat_key(root / rel)  # taken before decoding: a file changed meanwhile is re-read next time
        old = old_index.get(rel)
        if old and st and old.get("stat") == st and (old.get("reject") or old.get("image_id") in in_cache):
            reused[key] = dict(old)
            continue
        if in_cache and known_ids and st:
            # touched, copied or moved but maybe not changed: the content hash decides (cache keyed by content)
            try:
                image_id = content_id(read_bytes(root / rel, limit=PHOTO_LIMIT))
            except InputFileError:
                image_id = None
            if image_id in in_cache and image_id in known_ids:
                reused[key] = {k: v for k, v in known_ids[image_id].items() if k != "stat"} | {"stat": st}
                continue
        todo.append((str(root / rel), rel, None))
    return DecodePlan(reused, todo, stats, existing, in_cache)


@contextlib.contextmanager
def staging_file(out: Path, size: int) -> Iterator[Path]:
    """A fresh staging path in the cache folder, removed (if written) when the block ends, however it ends."""
    staging = _cache.cache_dir(out) / f".{STAGING}{size}_{uuid.uuid4().hex[:8]}.u8"
    try:
        yield staging
    finally:
        if staging.exists():
            staging.unlink()


def decode(plan: DecodePlan, files: Mapping[str, str], size: int, staging: Path, *, max_pixels: int,
           workers: int | None, progress: _cache.ProgressCallback | None) -> Photos:
    """Decode the plan's photos into `staging` (row i: the i-th of `plan.todo`); every photo's record."""
    results = _cache.decode_files(plan.todo, size, staging, max_pixels=max_pixels, workers=workers,
                                  progress=progress) if plan.todo else []
    key_of = {rel: k for k, rel in files.items()}
    records = dict(plan.reused)
    for r in results:
        rec: Record = {"stat": plan.stats[r["rel"]]}
        if "reject" in r:
            rec["reject"] = r["reject"]
        else:
            rec.update(image_id=r["image_id"], width=r["width"], height=r["height"], frames=r["frames"],
                       staged=r["row"])
        records[key_of[r["rel"]]] = rec
    return Photos(plan, records)


def write_cache(out: Path, size: int, ids: Sequence[str], keys_of: Mapping[str, Sequence[str]], photos: Photos,
                staging: Path) -> None:
    """The cache of `ids` (in that order); a row comes from a photo of that content decoded now (`keys_of`:
    image_id -> its photos' keys, the one that stands for it first), else from the cache being replaced."""
    plan = photos.plan
    staged_mm = (np.memmap(staging, dtype=np.uint8, mode="r", shape=(max(len(plan.todo), 1), size, size, 3))
                 if plan.todo else None)

    def row_source(image_id: str) -> np.ndarray:
        for k in keys_of[image_id]:
            if "staged" in photos.records[k]:
                assert staged_mm is not None  # a staged record means photos were decoded this run
                return staged_mm[photos.records[k]["staged"]]
        assert plan.existing is not None  # not decoded now: reused, so its content is in the old cache
        return plan.existing.array[plan.in_cache[image_id]]

    with _cache.cache_lock(out):
        _cache.write_cache(out, size, ids, row_source)


def write_file_index(out: Path, root: Path, max_pixels: int, photos: Photos, files: Mapping[str, str]) -> None:
    """cache/files.json for the next prepare (stat -> record); written after the cache it refers to."""
    file_index: dict = {"source": str(root), "max_pixels": max_pixels, "entries": {}}
    for key, rec in photos.records.items():
        file_index["entries"][files[key]] = {k: v for k, v in rec.items() if k != "staged"}
    atomic_write_json(_cache.cache_dir(out) / FILE_INDEX, file_index)
