"""Read and write the data directory's tables (manifest.csv, dataset.json, rejected.csv) atomically.

See docs/formats.md "Data directory" for the contract.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from mwa_cli import integrity
from mwa_cli.errors import DataError
from mwa_cli.fileio import atomic_write_text
from mwa_cli.safe_open import TABLE_LIMIT, load_json, read_bytes

SCHEMA_VERSION = 1
MANIFEST_COLUMNS = ["image_id", "path", "caption", "label", "split", "width", "height"]
REJECTED_COLUMNS = ["path", "row", "reason"]
SPLITS = ("train", "val", "test")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
PUBLISHED = ("manifest.csv", "rejected.csv", "data_report.json")  # their sha256 are recorded in dataset.json  # a spreadsheet would run a cell starting so as a formula


def _is_text(col: pd.Series) -> bool:
    return col.dtype == object or pd.api.types.is_string_dtype(col)


def _escape(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _unescape(value: Any) -> Any:
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def write_csv(path: Path, df: pd.DataFrame) -> None:
    """Write a table mwa publishes (atomically). A text cell that a spreadsheet would read as a formula (=, +, -, @,
    tab, CR; and ' itself, so the rule can be undone) gets a leading apostrophe, which Excel and LibreOffice show as
    plain text; `read_csv` removes it again."""
    out = df.copy()
    has_cr = False
    for col in out.columns:
        if _is_text(out[col]):
            out[col] = out[col].map(_escape)
            has_cr = has_cr or bool(out[col].str.contains("\r", regex=False).any())
    # pandas quotes a cell holding "\n" but not one holding a bare "\r", which a reader takes for a line end:
    # such a table quotes every text cell (rare; the usual files keep their minimal quoting)
    quoting = csv.QUOTE_NONNUMERIC if has_cr else csv.QUOTE_MINIMAL
    atomic_write_text(path, out.to_csv(index=False, lineterminator="\n", quoting=quoting))


def read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """A table written by `write_csv`, with its text cells as they were before escaping."""
    data = read_bytes(path, limit=TABLE_LIMIT, what="table")  # one read: the bytes parsed are those looked at
    df = pd.read_csv(io.BytesIO(data), encoding="utf-8", keep_default_na=False, **kwargs)
    if not _may_hold_escapes(data):
        return df
    for col in df.columns:
        if _is_text(df[col]):
            # a per-cell call over a million rows costs seconds: only the cells that start with ' get one
            escaped = df[col].str.startswith("'", na=False).to_numpy(dtype=bool)
            if escaped.any():
                df.loc[escaped, col] = df.loc[escaped, col].map(_unescape)
    return df


def _may_hold_escapes(data: bytes) -> bool:
    """Whether a cell of the CSV bytes may start with an apostrophe (one follows a delimiter, a line end, an
    opening quote or the start), so `read_csv` skips scanning the columns of a file without any."""
    if b"'" not in data:
        return False
    raw = np.frombuffer(data, dtype=np.uint8)
    at = np.flatnonzero(raw == ord("'"))
    return bool(at[0] == 0 or np.isin(raw[at[at > 0] - 1], np.frombuffer(b',\n\r"', dtype=np.uint8)).any())


def dataset_hash(df: pd.DataFrame) -> str:
    """sha256 over the manifest rows (image_id, caption, label, split), in file order."""
    h = hashlib.sha256()
    for row in df[["image_id", "caption", "label", "split"]].itertuples(index=False):
        h.update(json.dumps(list(row), ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _need_data_dir(data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}", hint="create it with `mwa prepare PHOTOS_DIR --out DIR`")
    return data_dir


def _read_data_file(data_dir: Path, name: str, read: Callable[[Path], Any]) -> Any:
    """Read one file of a prepared data directory, with the same clear errors for every file."""
    data_dir = _need_data_dir(data_dir)
    path = data_dir / name
    if not path.is_file():
        raise DataError(f"{path} is missing: {data_dir} is not a prepared data directory",
                        hint="run `mwa prepare PHOTOS_DIR --out DIR` first")
    try:
        return read(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read {path}: {exc}", hint="re-run `mwa prepare`") from None


def load_manifest(data_dir: Path) -> pd.DataFrame:
    """manifest.csv as a DataFrame: strings for text columns ('' for no label), ints for width/height."""
    path = Path(data_dir) / "manifest.csv"
    if (Path(data_dir) / "dataset.json").is_file():  # checked against the sha256 prepare recorded
        integrity.verify(data_dir, load_dataset_info(data_dir), ["manifest.csv"], side_name="dataset.json",
                         remedy=f"it was changed after `mwa prepare` wrote it: re-run `mwa prepare` to rebuild "
                                f"{data_dir} (a run started on the old data cannot be resumed on new data: start "
                                "a new run)")
    df = _read_data_file(data_dir, "manifest.csv",
                         lambda p: read_csv(p, dtype=str))
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks columns {missing}", hint="re-run `mwa prepare` with this mwa version")
    df["width"] = df["width"].astype(int)
    df["height"] = df["height"].astype(int)
    return df


def load_dataset_info(data_dir: Path) -> dict:
    """dataset.json as a dict."""
    path = Path(data_dir) / "dataset.json"
    info = _read_data_file(data_dir, "dataset.json", lambda p: load_json(p))
    if not isinstance(info, dict):
        raise DataError(f"{path} holds {type(info).__name__}, not the object `mwa prepare` writes",
                        hint="re-run `mwa prepare`")
    if info.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path} has schema_version {info.get('schema_version')!r}, this mwa reads {SCHEMA_VERSION}",
                        hint="re-run `mwa prepare` with this mwa version")
    return info
