"""`mwa prepare` as a function: photos folder -> data directory (see docs/formats.md).

Steps: scan the folder (path safety) -> read captions (table / sidecar / folders) -> decode and validate every
captioned photo in a process pool, resizing it for the cache as it goes -> merge duplicates -> split ->
write cache, manifest.csv, rejected.csv, data_report.json and dataset.json (last, atomically).

Accounting (checked before anything is written): every file found in the folder is either used or listed in
rejected.csv, and every caption row found is used, merged as a duplicate, excluded by --lang, or rejected.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from mwa_cli import __version__, integrity
from mwa_cli.data import cache as _cache
from mwa_cli.data import ingest
from mwa_cli.data.captions import load_templates
from mwa_cli.data.images import DEFAULT_MAX_PIXELS, content_id
from mwa_cli.data.manifest import MANIFEST_COLUMNS, PUBLISHED, REJECTED_COLUMNS, SCHEMA_VERSION, dataset_hash, write_csv
from mwa_cli.data.splits import assign_splits, parse_ratios
from mwa_cli.data.stats import build_report, tokenizer_coverage
from mwa_cli.errors import EXIT_DATA, EXIT_STRICT, ConfigError, DataError
from mwa_cli.eval.small_split import split_warnings
from mwa_cli.fileio import atomic_write_json
from mwa_cli.integrity import FILES_KEY
from mwa_cli.outdir import FolderLock, is_empty, read_marker, remove_temp, write_marker
from mwa_cli.ranges import SEED, Range
from mwa_cli.safe_open import PHOTO_LIMIT, InputFileError, load_json, read_bytes

WORKERS = Range(0, 1024, whole=True)  # decoding processes (0: one per core); more than the cores are capped
STAGING = "staging_"  # decoded photos of one prepare, before they become the cache (cache/.staging_*)
FILE_INDEX = "files.json"


@dataclass
class PrepareResult:
    out_dir: Path
    format: str
    counts: dict
    report: dict
    dataset_hash: str
    rejected: pd.DataFrame
    decoded: int = 0
    reused: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """The machine-readable summary printed by `--json`."""
        return {"out_dir": str(self.out_dir), "format": self.format, "dataset_hash": self.dataset_hash,
                "counts": self.counts, "decoded": self.decoded, "reused_from_cache": self.reused,
                "seconds": round(self.seconds, 3), "rejected": self.rejected.to_dict("records"),
                "report": self.report, "notes": list(self.notes)}


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


def prepare_dataset(
    photos_dir: Path,
    out_dir: Path,
    *,
    fmt: str = "auto",
    lang: str = "both",
    split: str | tuple[float, float, float] = "0.8,0.1,0.1",
    seed: int = 0,
    image_size: int = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    strict: bool = False,
    progress: _cache.ProgressCallback | None = None,
    templates: Path | None = None,
    label_texts: dict[str, dict[str, str]] | None = None,
    tokenizer: Path | None = None,
    workers: int | None = None,
    force: bool = False,
) -> PrepareResult:
    """Prepare `photos_dir` into the data directory `out_dir` (`force`: replace a data dir prepared from another
    photos folder); `progress(done, total)` is called while the photos are decoded."""
    t0 = time.perf_counter()
    # ---------------------------------------------------------------- options
    if fmt not in ("auto",) + ingest.FORMATS:
        raise ConfigError(f"--format must be auto, table, sidecar or folders (got {fmt!r})")
    if lang not in ("en", "ja", "both"):
        raise ConfigError(f"--lang must be en, ja or both (got {lang!r})")
    ratios = parse_ratios(split) if isinstance(split, str) else tuple(float(x) for x in split)
    if not 8 <= int(image_size) <= 4096:
        raise ConfigError(f"--image-size {image_size} is out of range (8–4096)", hint="e.g. 224 for BEiT-3")
    if int(max_pixels) < 1:
        raise ConfigError("--max-pixels must be positive")
    if not SEED.contains(seed):
        raise ConfigError(f"--seed must be {SEED.describe()}, not {seed!r}", hint="e.g. --seed 0")
    if workers is not None and not WORKERS.contains(workers):
        raise ConfigError(f"--workers must be {WORKERS.describe()}, not {workers!r}", hint="e.g. --workers 4 "
                          "(or 0: one per CPU core)")
    size, max_pixels = int(image_size), int(max_pixels)
    photos = Path(photos_dir).expanduser()
    if not photos.exists():
        raise DataError(f"photos folder not found: {photos}", hint="give the folder that holds your photos",
                        exit_code=EXIT_DATA)
    if not photos.is_dir():
        hint = (f"give the folder that holds it: mwa prepare {photos.parent}" if photos.name.lower() in ingest.TABLE_NAMES
                else "give the folder that holds your photos")
        raise DataError(f"{photos} is a file, not a folder", hint=hint, exit_code=EXIT_DATA)
    root = photos.resolve()
    out = Path(out_dir).expanduser().resolve()
    if out == root:
        raise ConfigError("--out must differ from the photos folder", hint="e.g. --out data")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="choose a folder name")
    with claim_data_dir(out, root, force=force):
        return _prepare_into(root, out, t0, fmt=fmt, lang=lang, ratios=ratios, seed=seed, size=size,
                             max_pixels=max_pixels, strict=strict, progress=progress, templates=templates,
                             label_texts=label_texts, tokenizer=tokenizer, workers=workers)


def is_data_dir(path: Path) -> bool:
    """A folder mwa made with `mwa prepare`: its marker, or (older versions) a dataset.json mwa wrote."""
    if read_marker(path, "data") is not None:
        return True
    try:
        info = load_json(Path(path) / "dataset.json")
    except InputFileError:
        return False
    return isinstance(info, dict) and "dataset_hash" in info and "mwa_version" in info


def _prepared_from(path: Path) -> str | None:
    """The photos folder the data dir in `path` was prepared from (marker, else dataset.json), if recorded."""
    marker = read_marker(path, "data") or {}
    if marker.get("source"):
        return str(marker["source"])
    try:
        info = load_json(Path(path) / "dataset.json")
    except InputFileError:
        return None
    return str(info["source"]) if isinstance(info, dict) and info.get("source") else None


@contextlib.contextmanager
def claim_data_dir(out: Path, root: Path, *, force: bool = False) -> Iterator[None]:
    """Make `out` this prepare's own for as long as it runs (docs/formats.md, "Rules"): a folder holding files
    mwa did not write is refused untouched; a data dir prepared from another photos folder (that still exists) is
    replaced only with `force`; the folder is locked, marked, and cleared of what a killed prepare left."""
    if not is_empty(out) and not is_data_dir(out):
        names = sorted(p.name for p in out.iterdir())[:4]
        raise ConfigError(f"--out {out} holds files mwa did not write ({', '.join(names)}): nothing in it is changed",
                          hint="choose a new or empty folder for --out")
    with FolderLock(out, "data"):
        source = _prepared_from(out)
        # a source that no longer exists was moved or renamed: the same photos, prepared again
        if source is not None and source != str(root) and Path(source).is_dir() and not force:
            raise ConfigError(f"--out {out} holds the dataset prepared from {source}; this would replace it with "
                              f"one from {root}",
                              hint="choose another --out, or add --force to replace it")
        # a killed prepare's leftovers first: on a full disk they hold the space the marker needs
        remove_temp(out, (".*.tmp",))
        with _cache.cache_lock(out):  # the cache's own temporary files are written under its lock
            remove_temp(_cache.cache_dir(out), _cache.TEMP_PATTERNS + (f".{STAGING}*", ".*.tmp"))
        write_marker(out, "data", source=str(root))
        yield


def _prepare_into(root: Path, out: Path, t0: float, *, fmt: str, lang: str, ratios: tuple, seed: int, size: int,
                  max_pixels: int, strict: bool, progress: _cache.ProgressCallback | None, templates: Path | None,
                  label_texts: dict[str, dict[str, str]] | None, tokenizer: Path | None,
                  workers: int | None) -> PrepareResult:
    """The body of `prepare_dataset`, run while the data dir is claimed."""
    # ---------------------------------------------------------------- scan + captions
    scan = ingest.scan_folder(root, exclude=[out])
    if scan.bad_tables and fmt in ("auto", "table"):  # never a silent switch to another shape
        name, why = scan.bad_tables[0]
        raise DataError(f"the captions table {name} in {root} cannot be used: {why}",
                        hint="replace it with an ordinary file inside the photos folder, or remove it (or give "
                             "--format sidecar or --format folders to read the photos another way)",
                        exit_code=EXIT_DATA)
    chosen = ingest.detect_format(scan) if fmt == "auto" else fmt
    if chosen == "table":
        if not scan.tables:
            raise DataError(f"--format table, but {root} has no captions.csv, captions.tsv or captions.jsonl",
                            hint="put the captions table at the folder root, or use --format auto", exit_code=EXIT_DATA)
        caps = ingest.read_table(scan, lang)
    elif chosen == "sidecar":
        caps = ingest.read_sidecars(scan)
    else:
        caps = ingest.read_folders(scan, load_templates(lang, templates), label_texts)
    notes = list(caps.notes)
    if workers is not None and workers > _cache.default_workers():
        notes.append(f"--workers {workers}: this machine has {_cache.default_workers()} CPU cores, so that many "
                     "decoding processes were used")
    if scan.data_dirs:
        notes.append(f"skipped {len(scan.data_dirs)} folder(s) holding an earlier `mwa prepare` output: "
                     + ", ".join(scan.data_dirs[:3]))

    rejected: list[ingest.Rejection] = list(scan.rejected) + list(caps.rejected)
    # files that are not photos or caption sources
    for rel in scan.other:
        rejected.append(ingest.Rejection(rel, None, f"not an image file type ({Path(rel).suffix or 'no extension'})"))
    if chosen != "sidecar":
        for rel in scan.texts.values():
            rejected.append(ingest.Rejection(rel, None, f"text file not used (the captions come from the {chosen} format)"))
    if chosen != "table":
        for rel in scan.tables:
            rejected.append(ingest.Rejection(rel, None, f"captions table not used (--format {chosen})"))
    files_found = scan.walked - (1 if chosen == "table" else 0) - (len(scan.texts) if chosen == "sidecar" else 0)

    captioned = sorted({e.path for e in caps.entries})
    captioned_set = set(captioned)
    for key, rel in scan.files.items():
        if key not in captioned_set:
            rejected.append(ingest.Rejection(rel, None, caps.no_caption_reason))

    # ---------------------------------------------------------------- decode (or reuse)
    out.mkdir(parents=True, exist_ok=True)
    old_index, known_ids = _load_file_index(out, root, max_pixels)
    existing = _cache.try_open(out, size)
    in_cache = {} if existing is None else {i: n for n, i in enumerate(existing.ids)}
    info: dict[str, dict] = {}
    todo: list[tuple[str, str, None]] = []
    stats: dict[str, list[int] | None] = {}
    for key in captioned:
        rel = scan.files[key]
        st = stats[rel] = _stat_key(root / rel)  # taken before decoding: a file changed meanwhile is re-read next time
        old = old_index.get(rel)
        if old and st and old.get("stat") == st and (old.get("reject") or old.get("image_id") in in_cache):
            info[key] = dict(old)
            continue
        if in_cache and known_ids and st:
            # touched, copied or moved but maybe not changed: the content hash decides (cache keyed by content)
            try:
                image_id = content_id(read_bytes(root / rel, limit=PHOTO_LIMIT))
            except InputFileError:
                image_id = None
            if image_id in in_cache and image_id in known_ids:
                info[key] = {k: v for k, v in known_ids[image_id].items() if k != "stat"} | {"stat": st}
                continue
        todo.append((str(root / rel), rel, None))
    staging = _cache.cache_dir(out) / f".{STAGING}{size}_{uuid.uuid4().hex[:8]}.u8"
    try:
        results = _cache.decode_files(todo, size, staging, max_pixels=max_pixels, workers=workers,
                                      progress=progress) if todo else []
        key_of = {rel: k for k, rel in scan.files.items()}
        for r in results:
            rec = {"stat": stats[r["rel"]]}
            if "reject" in r:
                rec["reject"] = r["reject"]
            else:
                rec.update(image_id=r["image_id"], width=r["width"], height=r["height"], frames=r["frames"],
                           staged=r["row"])
            info[key_of[r["rel"]]] = rec

        # ------------------------------------------------------------ group by content: duplicates merged
        by_id: dict[str, list[str]] = {}
        multi_frame: list[str] = []
        for key in captioned:
            rec = info[key]
            if rec.get("reject"):
                rejected.append(ingest.Rejection(scan.files[key], None, rec["reject"]))
                continue
            by_id.setdefault(rec["image_id"], []).append(key)
            if rec.get("frames", 1) > 1:
                multi_frame.append(scan.files[key])
        if multi_frame:
            notes.append(f"{len(multi_frame)} animated or multi-frame file(s): the first frame was used")
        duplicates = [[scan.files[k] for k in keys] for keys in by_id.values() if len(keys) > 1]
        canon = {i: keys[0] for i, keys in by_id.items()}  # keys are sorted: first path wins

        # ------------------------------------------------------------ pairs
        seen_pairs: set[tuple[str, str]] = set()
        rows_by_image: dict[str, list[ingest.CaptionEntry]] = {}
        dup_captions = 0
        for e in caps.entries:
            rec = info[e.path]
            if rec.get("reject"):
                if e.row is not None or e.source != "template":
                    rejected.append(ingest.Rejection(scan.files[e.path], e.row,
                                                     f"its image was rejected ({rec['reject']})", "row"))
                continue
            pair = (rec["image_id"], e.caption)
            if pair in seen_pairs:
                dup_captions += 1
                continue
            seen_pairs.add(pair)
            rows_by_image.setdefault(rec["image_id"], []).append(e)

        rej_df = pd.DataFrame(
            [{"path": r.path, "row": "" if r.row is None else str(r.row), "reason": r.reason} for r in rejected],
            columns=REJECTED_COLUMNS)
        rej_files = sum(1 for r in rejected if r.kind == "file")
        rej_rows = len(rejected) - rej_files
        used_files = sum(len(v) for v in by_id.values())
        rows_used = sum(len(v) for v in rows_by_image.values()) if chosen != "folders" else 0
        counts_files = {"found": files_found, "used": used_files, "rejected": rej_files,
                        "duplicates_merged": sum(len(g) - 1 for g in duplicates)}
        counts_rows = {"found": caps.rows_found, "used": rows_used, "rejected": rej_rows,
                       "duplicates_merged": dup_captions if chosen != "folders" else 0, "excluded_by_lang": caps.excluded}
        if chosen != "folders" and rows_used + rej_rows + dup_captions + caps.excluded != caps.rows_found:
            notes.append("internal check: caption rows do not add up (please report this)")
        if used_files + rej_files != files_found:
            notes.append("internal check: files do not add up (please report this)")

        if not rows_by_image:
            out.mkdir(parents=True, exist_ok=True)
            write_csv(out / "rejected.csv", rej_df)
            top = rej_df["reason"].value_counts().head(3)
            why = "; ".join(f"{n}× {r}" for r, n in top.items()) or "the folder is empty"
            raise DataError(
                f"no usable image-caption pair in {root} ({files_found} files, {caps.rows_found} caption rows found): {why}",
                hint=f"see {out / 'rejected.csv'} for every file and row with its reason. " + ingest._SHAPES_HINT,
                exit_code=EXIT_DATA)

        # ------------------------------------------------------------ splits + manifest
        image_ids = sorted(rows_by_image)
        labels = {i: next((e.label for e in rows_by_image[i] if e.label), "") for i in image_ids}
        given = {i: next((e.split for e in rows_by_image[i] if e.split), "") for i in image_ids}
        split_of, split_method = assign_splits(image_ids, labels, given, ratios, seed)
        conflicts = [i for i in image_ids if len({e.split for e in rows_by_image[i] if e.split}) > 1]
        if conflicts:
            notes.append(f"{len(conflicts)} image(s) had rows with different splits; the first one given was used")

        order = sorted(image_ids, key=lambda i: scan.files[canon[i]])
        rows = []
        for i in order:
            rec = info[canon[i]]
            for e in rows_by_image[i]:
                rows.append({"image_id": i, "path": scan.files[canon[i]], "caption": e.caption, "label": e.label,
                             "split": split_of[i], "width": int(rec["width"]), "height": int(rec["height"])})
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)

        if strict and len(rej_df):
            write_csv(out / "rejected.csv", rej_df)
            top = rej_df["reason"].value_counts().head(3)
            raise DataError(
                f"--strict: {len(rej_df)} file(s) or row(s) were rejected: "
                + "; ".join(f"{n}× {r}" for r, n in top.items()),
                hint=f"fix them (see {out / 'rejected.csv'}) or run without --strict; no dataset was written",
                exit_code=EXIT_STRICT)

        # ------------------------------------------------------------ cache
        ids_in_order = list(dict.fromkeys(manifest["image_id"]))
        staged_mm = (np.memmap(staging, dtype=np.uint8, mode="r", shape=(max(len(todo), 1), size, size, 3))
                     if todo else None)
        def row_source(image_id: str) -> np.ndarray:
            rec = info[canon[image_id]]
            if "staged" in rec:
                return staged_mm[rec["staged"]]
            for k in by_id[image_id]:  # any duplicate decoded this run
                if "staged" in info[k]:
                    return staged_mm[info[k]["staged"]]
            return existing.array[in_cache[image_id]]

        with _cache.cache_lock(out):
            _cache.write_cache(out, size, ids_in_order, row_source)
        staged_mm = None  # release the staging map before it is removed
    finally:
        if staging.exists():
            staging.unlink()

    # file index for the next run (stat -> id), written after the cache it refers to
    file_index = {"source": str(root), "max_pixels": max_pixels, "entries": {}}
    for key, rec in info.items():
        file_index["entries"][scan.files[key]] = {k: v for k, v in rec.items() if k != "staged"}
    atomic_write_json(_cache.cache_dir(out) / FILE_INDEX, file_index)

    # ---------------------------------------------------------------- report + files
    by_split = {s: {"images": int(manifest[manifest["split"] == s]["image_id"].nunique()),
                    "captions": int((manifest["split"] == s).sum())} for s in ("train", "val", "test")}
    counts = {"images": len(ids_in_order), "captions": len(manifest), "rejected": len(rej_df),
              "found": files_found + caps.rows_found, "files": counts_files, "rows": counts_rows,
              "by_split": by_split}
    notes.extend(split_warnings(by_split, None if "split column" in split_method else ratios))
    tok = tokenizer_coverage(manifest["caption"].tolist(), tokenizer)
    report = build_report(manifest, rej_df, duplicates=duplicates, duplicate_captions=dup_captions,
                          multi_frame=multi_frame, notes=notes, counts=counts, tokenizer=tok,
                          split_method=split_method)
    dhash = dataset_hash(manifest)
    write_csv(out / "manifest.csv", manifest)
    write_csv(out / "rejected.csv", rej_df)
    atomic_write_json(out / "data_report.json", report)
    atomic_write_json(out / "dataset.json", {  # last: it records the sha256 of the files written before it
        "schema_version": SCHEMA_VERSION, "source": str(root), "format": chosen, "dataset_hash": dhash,
        "counts": counts, "image_size": size, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mwa_version": __version__,
        "settings": {"lang": lang, "split": list(ratios), "seed": seed, "max_pixels": max_pixels,
                     "templates": str(templates) if templates else None, "label_texts": label_texts or None},
        FILES_KEY: integrity.record(out, PUBLISHED),
    })
    return PrepareResult(out, chosen, counts, report, dhash, rej_df, decoded=len(todo),
                         reused=len(ids_in_order) - sum(1 for i in ids_in_order if any("staged" in info[k] for k in by_id[i])),
                         seconds=time.perf_counter() - t0, notes=notes)
