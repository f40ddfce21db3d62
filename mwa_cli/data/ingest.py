"""Find the photos and their captions: folder scan with path safety, format detection, and the three readers.

Input shapes, tried in this order when `--format auto`:
1. `table`   – a captions table at the folder root: captions.csv, captions.tsv or captions.jsonl
2. `sidecar` – `a.jpg` + `a.txt` (one caption per non-empty line); also `a.jpg.txt`
3. `folders` – `photos/<label>/**/*.jpg`, captions made from templates (see captions.py)

Nothing here decodes images; it only decides which files and caption rows are candidates, and records every
file or row it will not use (with a reason a person understands).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mwa_cli.data.images import is_image_name
from mwa_cli.errors import EXIT_DATA, DataError
from mwa_cli.printable import printable
from mwa_cli.resources import SAMPLE_DATA as SAMPLE_DATA_DIR
from mwa_cli.resources import package_path
from mwa_cli.safe_open import TABLE_LIMIT, TEXT_LIMIT, InputFileError, not_regular, read_bytes

FORMATS = ("table", "sidecar", "folders")
TABLE_NAMES = ("captions.csv", "captions.tsv", "captions.jsonl")

IMAGE_COLUMNS = ("image", "file", "path", "filename", "file_name", "image_path", "image_file", "img", "photo",
                 "画像", "ファイル", "ファイル名")
CAPTION_COLUMNS = ("caption", "text", "description", "sentence", "キャプション", "説明")
LABEL_COLUMNS = ("label", "class", "category", "defect", "defect_type", "ラベル")
SPLIT_COLUMNS = ("split", "subset", "set")
LANG_COLUMNS = ("lang", "language")

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test", "eval": "test"}
IGNORED_NAMES = {"thumbs.db", "desktop.ini"}


@dataclass
class Rejection:
    path: str
    row: int | None
    reason: str
    kind: str = "file"  # "file" or "row"


@dataclass
class CaptionEntry:
    path: str            # key into Scan.files (NFC, POSIX, relative)
    caption: str
    label: str = ""
    split: str = ""
    row: int | None = None
    lang: str = ""
    source: str = ""     # the table or sidecar file


@dataclass
class Scan:
    root: Path
    files: dict[str, str] = field(default_factory=dict)         # NFC rel path -> actual rel path (images)
    texts: dict[str, str] = field(default_factory=dict)         # NFC rel path -> actual rel path (.txt files)
    tables: list[str] = field(default_factory=list)             # captions tables at the root
    other: list[str] = field(default_factory=list)              # other files (not images)
    rejected: list[Rejection] = field(default_factory=list)     # unsafe links etc.
    rejected_paths: dict[str, str] = field(default_factory=dict)
    ignored: int = 0                                            # hidden/system files
    walked: int = 0                                             # every non-hidden file or folder link seen
    data_dirs: list[str] = field(default_factory=list)          # prepared data dirs inside the folder (skipped)
    bad_tables: list[tuple[str, str]] = field(default_factory=list)  # captions tables refused: (name, reason)


@dataclass
class Captions:
    format: str
    entries: list[CaptionEntry]
    rejected: list[Rejection]        # rows (and caption files) not used
    rows_found: int
    excluded: int = 0                # rows skipped on purpose (--lang)
    notes: list[str] = field(default_factory=list)
    no_caption_reason: str = "no caption for this image"


def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


MAX_DEPTH = 64  # folder levels below the photos folder that are read; deeper ones are listed as refused


def _has_bad_bytes(name: str) -> bool:
    """A name that is not valid UTF-8 on disk (os.fsdecode keeps such bytes as lone surrogates)."""
    return any("\udc80" <= ch <= "\udcff" for ch in name)


def scan_folder(root: Path, exclude: list[Path] | None = None) -> Scan:
    """Walk `root` (not following folder links), sorting names for a deterministic order. No recursion: a folder
    nested thousands of levels deep is refused below MAX_DEPTH, never a crash."""
    root = Path(root).resolve()
    excl = [Path(e).resolve() for e in (exclude or [])]
    scan = Scan(root=root)
    pending: list[tuple[Path, int]] = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            _refuse(scan, folder.relative_to(root).as_posix(), f"folder cannot be read ({exc.strerror or exc})")
            continue
        subfolders = []
        for entry in entries:
            full = folder / entry.name
            if _is_folder(entry):
                if _scan_subfolder(scan, root, full, excl, depth):
                    subfolders.append(full)
            else:
                _scan_file(scan, root, full, folder == root)
        pending.extend((sub, depth + 1) for sub in reversed(subfolders))  # popped in name order
    scan.tables.sort(key=lambda n: TABLE_NAMES.index(n.lower()))
    return scan


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows a link: a link to a folder is a folder here (and refused below)
    except OSError:
        return False


def _refuse(scan: Scan, rel: str, why: str) -> None:
    """Count `rel` as seen and list it, with the reason, among the refused (its name made printable)."""
    scan.walked += 1
    shown = printable(rel)
    scan.rejected.append(Rejection(shown, None, why))
    scan.rejected_paths[nfc(rel)] = why
    if "/" not in rel and rel.lower() in TABLE_NAMES:
        scan.bad_tables.append((shown, why))


def _scan_subfolder(scan: Scan, root: Path, full: Path, excl: list[Path], depth: int) -> bool:
    """Whether to descend into the folder `full` (hidden, excluded, earlier outputs and links are not)."""
    name = full.name
    if name.startswith(".") or any(full == e for e in excl) or name == "__MACOSX":
        scan.ignored += 0 if any(full == e for e in excl) else 1
        return False
    rel = full.relative_to(root).as_posix()
    if os.path.isfile(full / "dataset.json") and os.path.isfile(full / "manifest.csv"):
        scan.data_dirs.append(printable(rel))  # an earlier `mwa prepare` output
        return False
    if full.is_symlink():
        inside = _inside(full.resolve(), root)
        _refuse(scan, rel, "symbolic link to a folder outside the photos folder; refused" if not inside
                else "symbolic link to a folder; not followed (link the files, or copy the folder)")
        return False
    if _has_bad_bytes(rel):
        _refuse(scan, rel, "folder name is not valid UTF-8 text; not read (rename it)")
        return False
    if depth + 1 > MAX_DEPTH:
        _refuse(scan, rel, f"folder nested more than {MAX_DEPTH} levels deep; not read")
        return False
    return True


def _scan_file(scan: Scan, root: Path, full: Path, at_root: bool) -> None:
    """Sort one file into images, caption texts, tables or other files; or refuse it, with the reason."""
    name = full.name
    rel = full.relative_to(root).as_posix()
    if name.startswith(".") or name.lower() in IGNORED_NAMES:
        scan.ignored += 1
        return
    if full.is_symlink():
        try:
            target = full.resolve(strict=True)
        except (OSError, RuntimeError):
            return _refuse(scan, rel, "broken symbolic link (its target does not exist)")
        if not _inside(target, root):
            return _refuse(scan, rel, "symbolic link pointing outside the photos folder; refused")
    why = not_regular(full)  # a FIFO would block the reader forever, a device never end
    if why is not None:
        return _refuse(scan, rel, why)
    if _has_bad_bytes(rel):
        return _refuse(scan, rel, "file name is not valid UTF-8 text; refused (rename it)")
    key = nfc(rel)
    if at_root and name.lower() in TABLE_NAMES:
        scan.walked += 1
        scan.tables.append(rel)
        return
    kind = scan.files if is_image_name(name) else scan.texts if name.lower().endswith(".txt") else None
    if kind is not None and key in kind:  # NFC and NFD twins: one is kept (the NFC one), the other refused
        keep, drop = (rel, kind[key]) if rel == key else (kind[key], rel)
        kind[key] = keep
        return _refuse(scan, drop, f"same name as {keep!r} once Unicode-normalised (the two differ only in how "
                                   "accented letters are encoded); rename one of them")
    scan.walked += 1
    if kind is None:
        scan.other.append(rel)
    else:
        kind[key] = rel


def detect_format(scan: Scan) -> str:
    """table > sidecar > folders; a DataError with guidance when none fits."""
    if scan.tables:
        return "table"
    if any(_sidecar_for(scan, k) for k in scan.files):
        return "sidecar"
    if any("/" in k for k in scan.files):
        return "folders"
    if not scan.files:
        raise DataError(
            f"no photos found in {scan.root}" + (f" ({len(scan.other)} other files, none an image)" if scan.other else ""),
            hint=_SHAPES_HINT, exit_code=EXIT_DATA)
    raise DataError(
        f"found {len(scan.files)} photos in {scan.root} but no captions for them",
        hint=_SHAPES_HINT, exit_code=EXIT_DATA)


SAMPLE_DATA = package_path(SAMPLE_DATA_DIR)  # the bundled photos, wherever mwa is installed
_SHAPES_HINT = (
    "mwa prepare reads one of three shapes: (1) captions.csv / .tsv / .jsonl at the folder root with columns "
    "image,caption[,label,split]; (2) a.jpg + a.txt with one caption per line; (3) one sub-folder per defect "
    f"class (photos/scratch/*.jpg) with captions made from templates. Try `mwa prepare {shlex.quote(str(SAMPLE_DATA))}"
    "` to see one (the photos bundled with mwa)."
)


def _sidecar_for(scan: Scan, key: str) -> str | None:
    stem = posixpath.splitext(key)[0]
    for cand in (stem + ".txt", key + ".txt", stem + ".TXT"):
        if cand in scan.texts:
            return cand
    return None


# ------------------------------------------------------------------------------------------------ encodings
def decode_text(data: bytes, name: str) -> tuple[str, str]:
    """(text, encoding used). UTF-8 with or without BOM, UTF-16 with BOM, else Shift_JIS (cp932)."""
    if data.startswith(b"\xef\xbb\xbf"):
        enc = "utf-8-sig"
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        enc = "utf-16"
    else:
        enc = "utf-8"
    try:
        return data.decode(enc), enc
    except UnicodeDecodeError as exc:
        utf8_err = exc
    line = data[: utf8_err.start].count(b"\n") + 1
    if enc == "utf-8":
        utf8_lines = [n for n, raw in enumerate(data.split(b"\n"), start=1) if not raw.isascii() and _is_utf8(raw)]
        if utf8_lines:
            raise DataError(
                f"{name} mixes text encodings: line {utf8_lines[0]} is UTF-8 but line {line} is not "
                "(perhaps rows pasted from a Shift_JIS file)",
                hint="open it in a text editor and save it as UTF-8 (Excel: 'CSV UTF-8'), then re-run",
                exit_code=EXIT_DATA)
        try:
            text = data.decode("cp932")
            # cp932 maps almost any byte somewhere; C1 controls or private-use characters mean it is not Japanese text
            if not re.search("[\u0080-\u009f\ue000-\uf8ff]", text):
                return text, "shift_jis"
        except UnicodeDecodeError:
            pass
    raise DataError(
        f"{name} is not readable text: byte 0x{data[utf8_err.start]:02x} on line {line} is not valid {enc.upper()}, "
        "and the file is not Shift_JIS either (it may mix encodings)",
        hint="open it in a text editor and save it as UTF-8 (Excel: 'CSV UTF-8'), then re-run",
        exit_code=EXIT_DATA)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --------------------------------------------------------------------------------------------------- tables
def _norm_col(c: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(c).replace("\ufeff", "").strip().lower())


def _pick(cols: list[str], names: tuple[str, ...]) -> str | None:
    normed = {_norm_col(c): c for c in cols}
    for n in names:
        if n in normed:
            return normed[n]
    return None


def _resolve_table_path(raw: str, scan: Scan) -> tuple[str | None, str | None]:
    """(key into scan.files, None) or (None, reason)."""
    p = raw.strip().replace("\\", "/")
    if not p:
        return None, "no image path in this row"
    if p.startswith("/") or re.match(r"^[A-Za-z]:/", p) or p.startswith("//"):
        return None, f"absolute path {raw!r} refused: give paths relative to the photos folder"
    norm = posixpath.normpath(p)
    if norm == ".." or norm.startswith("../"):
        return None, f"path {raw!r} leaves the photos folder; refused"
    key = nfc(norm)
    if key in scan.files:
        return key, None
    if key in scan.rejected_paths:
        return None, f"{raw}: {scan.rejected_paths[key]}"
    full = scan.root / norm
    if full.exists() or full.is_symlink():
        if full.is_dir():
            return None, f"{raw!r} is a folder, not an image file"
        if not is_image_name(norm):
            return None, f"{raw!r} is not an image file type ({Path(norm).suffix or 'no extension'})"
        return None, f"{raw!r} is inside a hidden or skipped folder"
    lower = {k.lower(): k for k in scan.files}
    if key.lower() in lower:
        return None, f"image file {raw!r} not found (did you mean {scan.files[lower[key.lower()]]!r}? names are case-sensitive)"
    return None, f"image file {raw!r} not found in the photos folder"


def _read_table_frame(path: Path, rel: str) -> tuple[pd.DataFrame, list[int], list[Rejection], str]:
    """DataFrame of strings, the row number of each DataFrame row, rows rejected while parsing, encoding."""
    import io

    data = read_bytes(path, limit=TABLE_LIMIT, what="captions table")
    if not data.strip():
        raise DataError(f"{rel} is empty", hint="add a header line (image,caption) and one row per caption",
                        exit_code=EXIT_DATA)
    text, enc = decode_text(data, rel)
    text = text.lstrip("\ufeff")
    rejected: list[Rejection] = []
    if rel.lower().endswith(".jsonl"):
        records, rownums = [], []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                rejected.append(Rejection(rel, n, f"line is not valid JSON ({exc.msg})", "row"))
                continue
            if not isinstance(obj, dict):
                rejected.append(Rejection(rel, n, "line is not a JSON object like {\"image\": ..., \"caption\": ...}", "row"))
                continue
            records.append(obj)
            rownums.append(n)
        df = pd.DataFrame.from_records(records) if records else pd.DataFrame()
        return df, rownums, rejected, enc
    sep = "\t" if rel.lower().endswith(".tsv") else ","
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=True,
                         skipinitialspace=True)
    except pd.errors.ParserError as exc:
        raise DataError(f"{rel} is not a well-formed {'TSV' if sep == chr(9) else 'CSV'} file: {exc}",
                        hint="check quoting: captions containing commas must be in double quotes",
                        exit_code=EXIT_DATA) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{rel} has no header line", hint="the first line must name the columns, e.g. image,caption",
                        exit_code=EXIT_DATA) from None
    # Excel-style row numbers: the header is row 1. Exact when no caption spans lines.
    return df, [i + 2 for i in range(len(df))], rejected, enc


def read_table(scan: Scan, lang: str = "both") -> Captions:
    rel = scan.tables[0]
    df, rownums, rejected, enc = _read_table_frame(scan.root / rel, rel)
    rows_found = len(df) + len(rejected)
    notes: list[str] = []
    if enc == "shift_jis":
        notes.append(f"{rel} was read as Shift_JIS (cp932); saving it as UTF-8 is recommended")
    for extra in scan.tables[1:]:
        rejected.append(Rejection(extra, None, f"a second captions table; only {rel} is read", "file"))
    cols = [str(c) for c in df.columns]
    img_col = _pick(cols, IMAGE_COLUMNS)
    cap_col = _pick(cols, CAPTION_COLUMNS)
    if img_col is None or cap_col is None:
        missing = "image path" if img_col is None else "caption"
        raise DataError(
            f"{rel} has no {missing} column. Columns found: {cols or '(none)'}. "
            f"Accepted names — image: {', '.join(IMAGE_COLUMNS)}; caption: {', '.join(CAPTION_COLUMNS)}; "
            f"optional label: {', '.join(LABEL_COLUMNS)}; optional split: {', '.join(SPLIT_COLUMNS)}; "
            f"optional language: {', '.join(LANG_COLUMNS)}",
            hint="rename the header line of the table (e.g. image,caption,label), or pass --format to read another shape",
            exit_code=EXIT_DATA)
    label_col = _pick(cols, LABEL_COLUMNS)
    split_col = _pick(cols, SPLIT_COLUMNS)
    lang_col = _pick(cols, LANG_COLUMNS)
    entries: list[CaptionEntry] = []
    excluded = 0

    def cell(rec: dict, col: str | None) -> str:
        if col is None:
            return ""
        v = rec.get(col, "")
        if v is None or (isinstance(v, float) and v != v):
            return ""
        return str(v).strip()

    for rec, rownum in zip(df.to_dict("records"), rownums):
        key, why = _resolve_table_path(cell(rec, img_col), scan)
        if key is None:
            rejected.append(Rejection(cell(rec, img_col), rownum, why or "unusable path", "row"))
            continue
        raw_caps = rec.get(cap_col, "")
        caps = raw_caps if isinstance(raw_caps, list) else [raw_caps]
        caps = ["" if c is None or (isinstance(c, float) and c != c) else " ".join(str(c).split()) for c in caps]
        row_lang = cell(rec, lang_col).lower()
        if lang != "both" and row_lang and row_lang != lang:
            excluded += 1
            continue
        split_raw = cell(rec, split_col).lower()
        split = SPLIT_ALIASES.get(split_raw, "") if split_raw else ""
        if split_raw and not split:
            rejected.append(Rejection(scan.files[key], rownum,
                                      f"split value {split_raw!r} is not train, val or test", "row"))
            continue
        rows_found += len(caps) - 1  # a JSON list of captions counts as one row per caption
        for c in caps:
            if not c:
                rejected.append(Rejection(scan.files[key], rownum, "empty or whitespace-only caption", "row"))
            else:
                entries.append(CaptionEntry(key, c, cell(rec, label_col), split, rownum, row_lang, rel))
    return Captions("table", entries, rejected, rows_found, excluded, notes,
                    no_caption_reason=f"image has no usable caption row in {rel}")


def read_sidecars(scan: Scan) -> Captions:
    entries: list[CaptionEntry] = []
    rejected: list[Rejection] = []
    notes: list[str] = []
    used_txt: set[str] = set()
    rows_found = 0
    sjis = 0
    for key in scan.files:
        txt = _sidecar_for(scan, key)
        if txt is None:
            continue
        used_txt.add(txt)
        rel_txt = scan.texts[txt]
        try:
            text, enc = decode_text(read_bytes(scan.root / rel_txt, limit=TEXT_LIMIT, what="caption file"), rel_txt)
        except (DataError, InputFileError) as exc:
            rows_found += 1
            rejected.append(Rejection(rel_txt, None, exc.message, "row"))
            continue
        sjis += enc == "shift_jis"
        lines = [(n, " ".join(line.split())) for n, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1)]
        lines = [(n, line) for n, line in lines if line]
        if not lines:
            rows_found += 1
            rejected.append(Rejection(rel_txt, None, "caption file is empty or whitespace only", "row"))
            continue
        rows_found += len(lines)
        for n, line in lines:
            entries.append(CaptionEntry(key, line, "", "", n, "", rel_txt))
    for txt, rel_txt in scan.texts.items():
        if txt not in used_txt:
            rows_found += 1
            rejected.append(Rejection(rel_txt, None, "caption file has no image with the same name", "row"))
    if sjis:
        notes.append(f"{sjis} caption file(s) were read as Shift_JIS (cp932); saving as UTF-8 is recommended")
    return Captions("sidecar", entries, rejected, rows_found, 0, notes,
                    no_caption_reason="no caption file (a.jpg needs a.txt next to it)")


def read_folders(scan: Scan, templates: list[tuple[str, str]],
                 label_texts: dict[str, dict[str, str]] | None = None) -> Captions:
    from mwa_cli.data.captions import render
    from mwa_cli.data.label_text import caption_languages, label_warnings

    entries: list[CaptionEntry] = []
    rejected: list[Rejection] = []
    labels: set[str] = set()
    template_langs = {lang for lang, _ in templates}
    for key in scan.files:
        if "/" not in key:
            continue  # root-level photos have no class: reported as files without captions
        label = key.split("/", 1)[0]
        labels.add(label)
        langs = caption_languages(label, label_texts or {}, template_langs)
        for lang, tpl in ((lg, tp) for lg, tp in templates if lg in langs):
            entries.append(CaptionEntry(key, render(tpl, label, lang, label_texts), label, "", None, lang,
                                        "template"))
    notes = label_warnings(sorted(labels), label_texts or {}, {lang for lang, _ in templates})
    unused = sorted(set(label_texts or {}) - labels)
    if unused:
        notes.append(f"label description(s) for {', '.join(repr(u) for u in unused)} match no class folder "
                     f"(folders: {', '.join(sorted(labels)) or 'none'})")
    return Captions("folders", entries, rejected, 0, 0, notes,
                    no_caption_reason="photo is not inside a class folder (photos/<label>/...)")
