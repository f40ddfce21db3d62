"""`mwa prepare` as a function: photos folder -> data directory (see docs/formats.md).

Steps: scan the folder (path safety) -> read captions (table / sidecar / folders) -> decode and validate every
captioned photo in a process pool, resizing it for the cache as it goes -> merge duplicates -> split ->
write cache, manifest.csv, rejected.csv, data_report.json and dataset.json (last, atomically). Each step is a
function returning a frozen value that the next ones read; photo_records.py holds the decoding and its reuse.

Accounting (checked before anything is written): every file found in the folder is either used or listed in
rejected.csv, and every caption row found is used, merged as a duplicate, excluded by --lang, or rejected.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

from mwa_cli import __version__, integrity
from mwa_cli.data import cache as _cache
from mwa_cli.data import ingest, photo_records
from mwa_cli.data.captions import load_templates
from mwa_cli.data.images import DEFAULT_MAX_PIXELS
from mwa_cli.data.manifest import MANIFEST_COLUMNS, PUBLISHED, REJECTED_COLUMNS, SCHEMA_VERSION, dataset_hash, write_csv
from mwa_cli.data.splits import assign_splits, parse_ratios
from mwa_cli.data.stats import build_report, tokenizer_coverage
from mwa_cli.errors import EXIT_DATA, EXIT_STRICT, ConfigError, DataError
from mwa_cli.eval.small_split import split_warnings
from mwa_cli.fileio import atomic_write_json
from mwa_cli.integrity import FILES_KEY
from mwa_cli.outdir import FolderLock, is_empty, read_marker, remove_temp, write_marker
from mwa_cli.ranges import SEED, Range
from mwa_cli.safe_open import InputFileError, load_json

WORKERS = Range(0, 1024, whole=True)  # decoding processes (0: one per core); more than the cores are capped


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


@dataclass(frozen=True)
class _Options:
    """prepare_dataset's options, checked."""
    fmt: str
    lang: str
    ratios: tuple[float, ...]
    seed: int
    size: int
    max_pixels: int
    strict: bool
    templates: Path | None
    label_texts: dict[str, dict[str, str]] | None
    tokenizer: Path | None
    workers: int | None


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
    opts = _Options(fmt=fmt, lang=lang, ratios=ratios, seed=seed, size=size, max_pixels=max_pixels, strict=strict,
                    templates=templates, label_texts=label_texts, tokenizer=tokenizer, workers=workers)
    with claim_data_dir(out, root, force=force):
        return _prepare_into(root, out, t0, opts, progress)


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
            remove_temp(_cache.cache_dir(out), _cache.TEMP_PATTERNS + (f".{photo_records.STAGING}*", ".*.tmp"))
        write_marker(out, "data", source=str(root))
        yield


def _prepare_into(root: Path, out: Path, t0: float, opts: _Options,
                  progress: _cache.ProgressCallback | None) -> PrepareResult:
    """The body of `prepare_dataset`, run while the data dir is claimed."""
    inputs = _find_inputs(root, out, opts)
    out.mkdir(parents=True, exist_ok=True)
    plan = photo_records.plan_decoding(out, root, inputs.scan.files, inputs.captioned, opts.size, opts.max_pixels)
    with photo_records.staging_file(out, opts.size) as staging:
        photos = photo_records.decode(plan, inputs.scan.files, opts.size, staging, max_pixels=opts.max_pixels,
                                      workers=opts.workers, progress=progress)
        contents = _group_by_content(inputs, photos)
        pairs = _pair_captions(inputs, photos)
        tally = _tally(inputs, contents, pairs)
        if not pairs.rows_by_image:
            _refuse_no_pairs(root, out, inputs, tally)
        listing = _list_pairs(inputs, photos, contents, pairs, opts)
        if opts.strict and len(tally.rejected):
            _refuse_rejections(out, tally.rejected)
        ids = listing.image_ids()
        photo_records.write_cache(out, opts.size, ids, contents.keys_of, photos, staging)
    photo_records.write_file_index(out, root, opts.max_pixels, photos, inputs.scan.files)

    counts = _counts(inputs, tally, listing.manifest, ids)
    notes = [*inputs.captions.notes, *_workers_notes(opts.workers), *inputs.notes, *contents.notes, *tally.notes,
             *listing.notes, *split_warnings(counts["by_split"], listing.stated_ratios)]
    report = _report(listing, tally, contents, pairs, counts, notes, opts.tokenizer)
    dhash = _write_dataset(out, root, opts, inputs.format, listing.manifest, tally.rejected, report, counts)
    return PrepareResult(out, inputs.format, counts, report, dhash, tally.rejected, decoded=len(plan.todo),
                         reused=sum(1 for i in ids if not photos.decoded_now(contents.keys_of[i])),
                         seconds=time.perf_counter() - t0, notes=notes)


# -------------------------------------------------------------------------------------- scan + captions
@dataclass(frozen=True)
class _Inputs:
    """What the photos folder offers: its scan, the captions read in the chosen format, the captioned photos, and
    every file left out before any is decoded."""
    scan: ingest.Scan
    format: str
    captions: ingest.Captions
    captioned: tuple[str, ...]             # keys (into scan.files) of the photos with a caption, sorted
    files_found: int
    rejected: tuple[ingest.Rejection, ...]
    notes: tuple[str, ...]                 # on the scan (earlier outputs skipped)


def _find_inputs(root: Path, out: Path, opts: _Options) -> _Inputs:
    scan = ingest.scan_folder(root, exclude=[out])
    chosen = _choose_format(scan, root, opts.fmt)
    caps = _read_captions(scan, root, chosen, opts)
    captioned = tuple(sorted({e.path for e in caps.entries}))
    files_found = scan.walked - (1 if chosen == "table" else 0) - (len(scan.texts) if chosen == "sidecar" else 0)
    notes = ((f"skipped {len(scan.data_dirs)} folder(s) holding an earlier `mwa prepare` output: "
              + ", ".join(scan.data_dirs[:3])),) if scan.data_dirs else ()
    return _Inputs(scan, chosen, caps, captioned, files_found, _left_out(scan, caps, chosen, captioned), notes)


def _choose_format(scan: ingest.Scan, root: Path, fmt: str) -> str:
    if scan.bad_tables and fmt in ("auto", "table"):  # never a silent switch to another shape
        name, why = scan.bad_tables[0]
        raise DataError(f"the captions table {name} in {root} cannot be used: {why}",
                        hint="replace it with an ordinary file inside the photos folder, or remove it (or give "
                             "--format sidecar or --format folders to read the photos another way)",
                        exit_code=EXIT_DATA)
    return ingest.detect_format(scan) if fmt == "auto" else fmt


def _read_captions(scan: ingest.Scan, root: Path, chosen: str, opts: _Options) -> ingest.Captions:
    if chosen == "table":
        if not scan.tables:
            raise DataError(f"--format table, but {root} has no captions.csv, captions.tsv or captions.jsonl",
                            hint="put the captions table at the folder root, or use --format auto", exit_code=EXIT_DATA)
        return ingest.read_table(scan, opts.lang)
    if chosen == "sidecar":
        return ingest.read_sidecars(scan)
    return ingest.read_folders(scan, load_templates(opts.lang, opts.templates), opts.label_texts)


def _left_out(scan: ingest.Scan, caps: ingest.Captions, chosen: str,
              captioned: tuple[str, ...]) -> tuple[ingest.Rejection, ...]:
    """The files and rows not used before decoding: refused by the scan or the reader, not photos or caption
    sources of the chosen format, or photos without a caption."""
    unused = [ingest.Rejection(rel, None, f"not an image file type ({Path(rel).suffix or 'no extension'})")
              for rel in scan.other]
    if chosen != "sidecar":
        unused += [ingest.Rejection(rel, None, f"text file not used (the captions come from the {chosen} format)")
                   for rel in scan.texts.values()]
    if chosen != "table":
        unused += [ingest.Rejection(rel, None, f"captions table not used (--format {chosen})") for rel in scan.tables]
    captioned_set = set(captioned)
    unused += [ingest.Rejection(rel, None, caps.no_caption_reason)
               for key, rel in scan.files.items() if key not in captioned_set]
    return (*scan.rejected, *caps.rejected, *unused)


def _workers_notes(workers: int | None) -> tuple[str, ...]:
    if workers is not None and workers > _cache.default_workers():
        return (f"--workers {workers}: this machine has {_cache.default_workers()} CPU cores, so that many "
                "decoding processes were used",)
    return ()


# ---------------------------------------------------------------------- group by content: duplicates merged
@dataclass(frozen=True)
class _Contents:
    """The decoded photos grouped by content; the first path in sorted order stands for each image."""
    keys_of: dict[str, list[str]]          # image_id -> keys of its photos, sorted (the first stands for it)
    duplicates: list[list[str]]            # the paths of each image found more than once
    multi_frame: list[str]                 # paths of the animated or multi-frame files
    rejected: tuple[ingest.Rejection, ...]  # photos that failed to decode or validate
    notes: tuple[str, ...]

    def canon(self, image_id: str) -> str:
        """The key of the photo that stands for `image_id`."""
        return self.keys_of[image_id][0]


def _group_by_content(inputs: _Inputs, photos: photo_records.Photos) -> _Contents:
    files = inputs.scan.files
    keys_of: dict[str, list[str]] = {}
    multi_frame: list[str] = []
    rejected: list[ingest.Rejection] = []
    for key in inputs.captioned:
        rec = photos.records[key]
        if rec.get("reject"):
            rejected.append(ingest.Rejection(files[key], None, rec["reject"]))
            continue
        keys_of.setdefault(rec["image_id"], []).append(key)
        if rec.get("frames", 1) > 1:
            multi_frame.append(files[key])
    notes = (f"{len(multi_frame)} animated or multi-frame file(s): the first frame was used",) if multi_frame else ()
    duplicates = [[files[k] for k in keys] for keys in keys_of.values() if len(keys) > 1]
    return _Contents(keys_of, duplicates, multi_frame, tuple(rejected), notes)


# -------------------------------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class _Pairs:
    """The distinct (image, caption) pairs, by image in caption order."""
    rows_by_image: dict[str, list[ingest.CaptionEntry]]
    duplicate_captions: int                # pairs seen before (a duplicate photo's or row's)
    rejected: tuple[ingest.Rejection, ...]  # rows whose image was rejected


def _pair_captions(inputs: _Inputs, photos: photo_records.Photos) -> _Pairs:
    seen: set[tuple[str, str]] = set()
    rows_by_image: dict[str, list[ingest.CaptionEntry]] = {}
    duplicate_captions = 0
    rejected: list[ingest.Rejection] = []
    for e in inputs.captions.entries:
        rec = photos.records[e.path]
        if rec.get("reject"):
            if e.row is not None or e.source != "template":
                rejected.append(ingest.Rejection(inputs.scan.files[e.path], e.row,
                                                 f"its image was rejected ({rec['reject']})", "row"))
            continue
        pair = (rec["image_id"], e.caption)
        if pair in seen:
            duplicate_captions += 1
            continue
        seen.add(pair)
        rows_by_image.setdefault(rec["image_id"], []).append(e)
    return _Pairs(rows_by_image, duplicate_captions, tuple(rejected))


# ------------------------------------------------------------------------------------------- accounting
@dataclass(frozen=True)
class _Tally:
    """rejected.csv and the files' and rows' counts, checked to add up."""
    rejected: pd.DataFrame
    files: dict[str, int]
    rows: dict[str, int]
    notes: tuple[str, ...]


def _tally(inputs: _Inputs, contents: _Contents, pairs: _Pairs) -> _Tally:
    rejected = [*inputs.rejected, *contents.rejected, *pairs.rejected]
    rej_df = pd.DataFrame(
        [{"path": r.path, "row": "" if r.row is None else str(r.row), "reason": r.reason} for r in rejected],
        columns=REJECTED_COLUMNS)
    caps, folders = inputs.captions, inputs.format == "folders"
    rej_files = sum(1 for r in rejected if r.kind == "file")
    rej_rows = len(rejected) - rej_files
    used_files = sum(len(v) for v in contents.keys_of.values())
    rows_used = sum(len(v) for v in pairs.rows_by_image.values()) if not folders else 0
    files = {"found": inputs.files_found, "used": used_files, "rejected": rej_files,
             "duplicates_merged": sum(len(g) - 1 for g in contents.duplicates)}
    rows = {"found": caps.rows_found, "used": rows_used, "rejected": rej_rows,
            "duplicates_merged": pairs.duplicate_captions if not folders else 0, "excluded_by_lang": caps.excluded}
    notes = []
    if not folders and rows_used + rej_rows + pairs.duplicate_captions + caps.excluded != caps.rows_found:
        notes.append("internal check: caption rows do not add up (please report this)")
    if used_files + rej_files != inputs.files_found:
        notes.append("internal check: files do not add up (please report this)")
    return _Tally(rej_df, files, rows, tuple(notes))


def _refuse_no_pairs(root: Path, out: Path, inputs: _Inputs, tally: _Tally) -> None:
    """Nothing to train on: rejected.csv says why, the error its three most common reasons."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "rejected.csv", tally.rejected)
    top = tally.rejected["reason"].value_counts().head(3)
    why = "; ".join(f"{n}× {r}" for r, n in top.items()) or "the folder is empty"
    raise DataError(
        f"no usable image-caption pair in {root} ({inputs.files_found} files, {inputs.captions.rows_found} caption "
        f"rows found): {why}",
        hint=f"see {out / 'rejected.csv'} for every file and row with its reason. " + ingest._SHAPES_HINT,
        exit_code=EXIT_DATA)


def _refuse_rejections(out: Path, rejected: pd.DataFrame) -> None:
    """--strict with anything rejected: rejected.csv only, no dataset."""
    write_csv(out / "rejected.csv", rejected)
    top = rejected["reason"].value_counts().head(3)
    raise DataError(
        f"--strict: {len(rejected)} file(s) or row(s) were rejected: "
        + "; ".join(f"{n}× {r}" for r, n in top.items()),
        hint=f"fix them (see {out / 'rejected.csv'}) or run without --strict; no dataset was written",
        exit_code=EXIT_STRICT)


# ------------------------------------------------------------------------------------ splits + manifest
@dataclass(frozen=True)
class _Listing:
    """manifest.csv: every pair with its image's split, images in path order."""
    manifest: pd.DataFrame
    split_method: str
    stated_ratios: tuple[float, ...] | None  # the ratios the split was asked to meet (None: a split column)
    notes: tuple[str, ...]

    def image_ids(self) -> list[str]:
        """The images in manifest order."""
        return list(dict.fromkeys(self.manifest["image_id"]))


def _list_pairs(inputs: _Inputs, photos: photo_records.Photos, contents: _Contents, pairs: _Pairs,
                opts: _Options) -> _Listing:
    rows_by_image, files = pairs.rows_by_image, inputs.scan.files
    image_ids = sorted(rows_by_image)
    labels = {i: next((e.label for e in rows_by_image[i] if e.label), "") for i in image_ids}
    given = {i: next((e.split for e in rows_by_image[i] if e.split), "") for i in image_ids}
    split_of, split_method = assign_splits(image_ids, labels, given, opts.ratios, opts.seed)
    conflicts = [i for i in image_ids if len({e.split for e in rows_by_image[i] if e.split}) > 1]
    notes = ((f"{len(conflicts)} image(s) had rows with different splits; the first one given was used",)
             if conflicts else ())
    rows = []
    for i in sorted(image_ids, key=lambda i: files[contents.canon(i)]):
        rec = photos.records[contents.canon(i)]
        for e in rows_by_image[i]:
            rows.append({"image_id": i, "path": files[contents.canon(i)], "caption": e.caption, "label": e.label,
                         "split": split_of[i], "width": int(rec["width"]), "height": int(rec["height"])})
    stated = None if "split column" in split_method else opts.ratios
    return _Listing(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), split_method, stated, notes)


# ------------------------------------------------------------------------------------------ report + files
def _counts(inputs: _Inputs, tally: _Tally, manifest: pd.DataFrame, ids: list[str]) -> dict:
    """dataset.json's counts: images, captions, rejections, what was found, and the split's sizes."""
    by_split = {s: {"images": int(manifest[manifest["split"] == s]["image_id"].nunique()),
                    "captions": int((manifest["split"] == s).sum())} for s in ("train", "val", "test")}
    return {"images": len(ids), "captions": len(manifest), "rejected": len(tally.rejected),
            "found": inputs.files_found + inputs.captions.rows_found, "files": tally.files, "rows": tally.rows,
            "by_split": by_split}


def _report(listing: _Listing, tally: _Tally, contents: _Contents, pairs: _Pairs, counts: dict, notes: list[str],
            tokenizer: Path | None) -> dict:
    """data_report.json, with the tokenizer's coverage of the captions."""
    manifest = listing.manifest
    tok = tokenizer_coverage(manifest["caption"].tolist(), tokenizer)
    return build_report(manifest, tally.rejected, duplicates=contents.duplicates,
                        duplicate_captions=pairs.duplicate_captions, multi_frame=contents.multi_frame, notes=notes,
                        counts=counts, tokenizer=tok, split_method=listing.split_method)


def _write_dataset(out: Path, root: Path, opts: _Options, chosen: str, manifest: pd.DataFrame,
                   rejected: pd.DataFrame, report: dict, counts: dict) -> str:
    """manifest.csv, rejected.csv, data_report.json, then dataset.json; the dataset's hash."""
    dhash = dataset_hash(manifest)
    write_csv(out / "manifest.csv", manifest)
    write_csv(out / "rejected.csv", rejected)
    atomic_write_json(out / "data_report.json", report)
    atomic_write_json(out / "dataset.json", {  # last: it records the sha256 of the files written before it
        "schema_version": SCHEMA_VERSION, "source": str(root), "format": chosen, "dataset_hash": dhash,
        "counts": counts, "image_size": opts.size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mwa_version": __version__,
        "settings": {"lang": opts.lang, "split": list(opts.ratios), "seed": opts.seed, "max_pixels": opts.max_pixels,
                     "templates": str(opts.templates) if opts.templates else None,
                     "label_texts": opts.label_texts or None},
        FILES_KEY: integrity.record(out, PUBLISHED),
    })
    return dhash
