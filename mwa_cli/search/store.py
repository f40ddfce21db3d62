"""The on-disk search index (files listed in the package docstring): loading it (`SearchIndex.load`, the
embeddings memory-mapped), its metadata, and writing a generation (`write_index`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from mwa_cli import integrity
from mwa_cli.errors import EXIT_DATA, ConfigError, DataError
from mwa_cli.outdir import read_marker
from mwa_cli.safe_open import InputFileError, load_json, not_regular, parse_json
from mwa_cli.search.rows import group_rows

SCHEMA_VERSION = 1
_DAMAGED_HINT = "rebuild the index: run the same `mwa index PHOTOS_DIR ... --out INDEX_DIR --rebuild` again"
INDEX_FILE = "index.json"
EMB_FILE = "embeddings.safetensors"
MANIFEST_FILE = "manifest.csv"
CAPTIONS_FILE = "captions.csv"
REJECTED_FILE = "rejected.csv"
MANIFEST_COLUMNS = ["path", "image_id", "row", "size", "mtime_ns", "width", "height"]
CAPTION_COLUMNS = ["caption", "label", "image_id", "path", "n_images"]
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header


@dataclass
class SearchIndex:
    """A loaded index: embeddings (float32), file manifest, caption set and metadata. The photos' embeddings
    are a read-only memory map of embeddings.safetensors (archives larger than RAM; docs/decisions.md)."""

    path: Path
    meta: dict[str, Any]
    images: np.ndarray                     # [M, d] (or [M, Q, d]), read-only view of a memory map
    manifest: pd.DataFrame                 # one row per file
    captions: pd.DataFrame | None = None   # one row per caption
    caption_emb: torch.Tensor | None = None
    row_paths: Sequence[list[str]] = field(default_factory=list)  # row -> file paths (sorted; first = canonical)
    row_ids: list[str] = field(default_factory=list)
    _ivf: Any = field(default=None, repr=False)
    _key_rows: Any = field(default=None, repr=False)
    _row_of: dict[str, int] | None = field(default=None, repr=False)

    @property
    def identity(self) -> dict[str, Any]:
        return self.meta["identity"]

    @property
    def has_ivf(self) -> bool:
        """Whether index.json records an approximate (IVF) index (`mwa index --approx`)."""
        return bool(self.meta.get("approx"))

    def ivf(self) -> Any:
        """The persisted approximate index (mwa_cli.search.approx.ApproxIndex), loaded on first use."""
        from mwa_cli.search.approx import KINDS, ApproxIndex

        if self._ivf is None:
            if not self.has_ivf:
                raise ConfigError(f"the index {self.path} has no approximate index, so --nprobe cannot be used",
                                  hint=f"search without --nprobe (exact), or add one with `mwa index "
                                       f"{self.meta.get('source') or 'PHOTOS_DIR'} --adapter RUN_DIR "
                                       f"--out {self.path} --approx`")
            rec = self.meta["approx"]
            path = self.path / str(rec.get("file"))
            if rec.get("kind") not in KINDS:
                raise DataError(f"the approximate index of {self.path} was made by an older mwa ({rec.get('kind')})",
                                hint="run the same `mwa index ... --approx` again to rebuild it with faiss, or "
                                     "search without --nprobe", exit_code=EXIT_DATA)
            integrity.verify(self.path, self.meta, [path.name], side_name=INDEX_FILE, remedy=_DAMAGED_HINT)
            try:
                ivf = ApproxIndex.load(path, kind=rec["kind"], trained_rows=int(rec.get("trained_rows") or 0))
                if ivf.ntotal != self.n_images or ivf.dim != self.images.shape[1]:
                    raise ValueError(f"it holds {ivf.ntotal} vectors of {ivf.dim} dimensions, the index "
                                     f"{self.n_images} of {self.images.shape[1]}")
            except (ValueError, OSError) as exc:
                raise DataError(f"cannot use the approximate index {path}: {exc}",
                                hint="run the same `mwa index ... --approx` again, or search without --nprobe",
                                exit_code=EXIT_DATA) from None
            self._ivf = ivf
        return self._ivf

    def row_of(self, image_id: str) -> int | None:
        """The embedding row of a photo id (None when the index has no such photo)."""
        if self._row_of is None:
            self._row_of = {i: r for r, i in enumerate(self.row_ids)}
        return self._row_of.get(image_id)

    def key_rows(self) -> Any:
        """faiss keys → embedding rows (mwa_cli.search.approx.KeyRows), built on first use."""
        from mwa_cli.search.approx import KeyRows, image_keys

        if self._key_rows is None:
            self._key_rows = KeyRows(image_keys(self.row_ids))
        return self._key_rows

    @property
    def source(self) -> Path:
        return Path(self.meta["source"])

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def load(cls, index_dir: str | Path) -> "SearchIndex":
        index_dir = Path(index_dir)
        meta = read_index_meta(index_dir)
        emb_path = index_dir / EMB_FILE
        try:
            st_meta, tensors = map_safetensors(emb_path)
            if "images" not in tensors:
                raise ValueError("it holds no `images` tensor")
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {emb_path}: {exc}", hint="rebuild it with `mwa index ... --rebuild`",
                            exit_code=EXIT_DATA) from None
        images, caption_emb = tensors["images"], tensors.get("captions")
        if st_meta.get("generation") != meta.get("generation"):
            raise DataError(f"{index_dir} is incomplete (an interrupted `mwa index`?): the embeddings and "
                            "index.json are from different runs", hint="run the same `mwa index` again",
                            exit_code=EXIT_DATA)
        integrity.verify(index_dir, meta, [EMB_FILE, MANIFEST_FILE] + ([CAPTIONS_FILE] if caption_emb is not None
                                                                       else []),
                         side_name=INDEX_FILE, remedy=_DAMAGED_HINT)
        from mwa_cli.data.manifest import read_csv

        try:
            manifest = read_csv(index_dir / MANIFEST_FILE, dtype={"path": str, "image_id": str})
            captions = read_csv(index_dir / CAPTIONS_FILE, dtype=str) if caption_emb is not None else None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the tables of {index_dir}: {exc}", hint="run the same `mwa index` again",
                            exit_code=EXIT_DATA) from None
        mismatch = DataError(f"{index_dir / MANIFEST_FILE} does not match the embeddings (cut short or edited?)",
                             hint="run the same `mwa index` again", exit_code=EXIT_DATA)
        if any(c not in manifest.columns for c in MANIFEST_COLUMNS):
            raise mismatch
        try:
            rows = manifest["row"].astype(int).to_numpy() if len(manifest) else np.zeros(0, dtype=int)
        except (TypeError, ValueError):
            raise mismatch from None
        if len(rows) and (rows.max() >= images.shape[0] or rows.min() < 0):
            raise mismatch
        paths = manifest["path"].to_numpy(dtype=object)
        if (np.bincount(rows, minlength=images.shape[0]) == 0).any() or (paths == "").any():
            raise mismatch  # every embedding row belongs to at least one photo
        row_paths, row_ids = group_rows(rows, paths, manifest["image_id"].to_numpy(dtype=object), images.shape[0])
        if captions is not None and len(captions) != caption_emb.shape[0]:
            raise DataError(f"{index_dir / CAPTIONS_FILE} does not match the embeddings",
                            hint="run the same `mwa index` again", exit_code=EXIT_DATA)
        return cls(path=index_dir, meta=meta, images=images, manifest=manifest, captions=captions,
                   caption_emb=None if caption_emb is None else torch.from_numpy(np.array(caption_emb)),
                   row_paths=row_paths, row_ids=row_ids)


def map_safetensors(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The metadata and float32 tensors of a safetensors file, each a read-only memory map of the file: nothing is
    read until used, and the mapping stays valid when a newer file is renamed over this one (same open inode).
    ValueError when the file is not a safetensors file of float32 tensors."""
    why = not_regular(path)
    if why is not None:
        raise ValueError(why)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        n = int.from_bytes(fh.read(8), "little")
        if size < 8 or not 2 <= n <= min(size - 8, _MAX_HEADER):
            raise ValueError("not a safetensors file (bad header length)")
        header = parse_json(fh.read(n).decode("utf-8"), max_depth=4)
        if not isinstance(header, dict):
            raise ValueError("not a safetensors file (bad header)")
        metadata = header.pop("__metadata__", None) or {}
        tensors = {}
        for name, rec in header.items():
            try:
                dtype, shape = rec["dtype"], tuple(int(d) for d in rec["shape"])
                begin, end = (int(o) for o in rec["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"not a safetensors file (bad entry {name!r})") from None
            if dtype != "F32":
                raise ValueError(f"tensor {name!r} is {dtype}, not the float32 `mwa index` writes")
            if not 0 <= begin <= end <= size - 8 - n or end - begin != 4 * int(np.prod(shape)):
                raise ValueError(f"tensor {name!r} lies outside the file (cut short?)")
            if begin == end:
                tensors[name] = np.zeros(shape, dtype=np.float32)
                tensors[name].setflags(write=False)
            else:  # mapped from the file object we opened: a rename in the meantime cannot swap the inode; a plain
                # ndarray view of the map, because numpy.memmap's subclass hooks cost 0.2 ms per re-ranking gather
                tensors[name] = np.memmap(fh, dtype=np.float32, mode="r", offset=8 + n + begin,
                                          shape=shape).view(np.ndarray)
    return dict(metadata), tensors


def read_index_meta(index_dir: Path) -> dict[str, Any]:
    index_dir = Path(index_dir)
    path = index_dir / INDEX_FILE
    if not index_dir.exists():
        raise DataError(f"no index at {index_dir} (the folder does not exist)",
                        hint="build one with `mwa index PHOTOS_DIR --adapter RUN_DIR --out INDEX_DIR`",
                        exit_code=EXIT_DATA)
    if not path.is_file():
        raise DataError(f"{index_dir} is not a search index (no {INDEX_FILE})",
                        hint="build one with `mwa index PHOTOS_DIR --adapter RUN_DIR --out INDEX_DIR`",
                        exit_code=EXIT_DATA)
    try:
        meta = load_json(path)
    except InputFileError as exc:
        raise DataError(f"cannot read {path}: {exc.reason}", hint="run the same `mwa index` again",
                        exit_code=EXIT_DATA) from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} holds {type(meta).__name__}, not the object `mwa index` writes",
                        hint="run the same `mwa index ... --rebuild` again", exit_code=EXIT_DATA)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path} has schema_version {meta.get('schema_version')!r}, this mwa reads {SCHEMA_VERSION}",
                        hint="rebuild the index with this mwa version (`mwa index ... --rebuild`)",
                        exit_code=EXIT_DATA)
    return meta


def line_version_warning(meta: dict[str, Any]) -> str | None:
    """For an index built for a line version (`mwa index --line`): a warning when the line's current version is
    now another one (the results are still those of the version that built it: query and index agree), or when
    the line's pointer cannot be read. None otherwise (docs/decisions.md, "Stale line index: warn")."""
    line = meta.get("line")
    if not isinstance(line, dict) or not line.get("pointer"):
        return None
    name, built = line.get("name"), line.get("version")
    try:
        current = load_json(line["pointer"]).get("version")
    except (InputFileError, AttributeError):
        return f"cannot read which version of line {name} is current ({line['pointer']}); this index is v{built}'s"
    if current == built:
        return None
    return (f"this index was built with v{built} of line {name}, but the line's current version is v{current}: "
            f"the results are v{built}'s; `mwa index --line {name} --store {line.get('store')}` indexes the current "
            "one")


def is_index_dir(path: Path) -> bool:
    """A folder mwa made with `mwa index`: its marker, or (older versions) an index.json mwa wrote."""
    if read_marker(path, "index") is not None:
        return True
    try:
        meta = load_json(Path(path) / INDEX_FILE)
    except InputFileError:
        return False
    return isinstance(meta, dict) and "schema_version" in meta and "generation" in meta


def write_index(out: Path, images: torch.Tensor, manifest: pd.DataFrame, captions: pd.DataFrame | None,
                caption_emb: torch.Tensor | None, rejected: pd.DataFrame, meta: dict[str, Any],
                ivf: Any = None) -> None:
    """Write one generation into `out`: every file to a temporary name then os.replace; index.json last (with the
    files' sha256), so readers see the old generation or the new one."""
    from safetensors.torch import save_file

    from mwa_cli.data.manifest import write_csv
    from mwa_cli.fileio import atomic_write, atomic_write_json

    tensors = {"images": images.float().contiguous()}
    if caption_emb is not None:
        tensors["captions"] = caption_emb.float().contiguous()
    atomic_write(out / EMB_FILE, lambda tmp: save_file(tensors, tmp, metadata={"generation": meta["generation"]}))
    write_csv(out / MANIFEST_FILE, manifest)
    if captions is not None:
        write_csv(out / CAPTIONS_FILE, captions)
    elif (out / CAPTIONS_FILE).exists():
        (out / CAPTIONS_FILE).unlink()
    write_csv(out / REJECTED_FILE, rejected)
    from mwa_cli.search.approx import FILE_PREFIX, FILE_SUFFIX

    keep = (meta.get("approx") or {}).get("file")
    if ivf is not None:
        ivf.save(out / keep)
    published = [EMB_FILE, MANIFEST_FILE, REJECTED_FILE] + ([CAPTIONS_FILE] if captions is not None else []) + \
        ([keep] if keep else [])
    meta = dict(meta, **{integrity.FILES_KEY: integrity.record(out, published)})
    atomic_write_json(out / INDEX_FILE, meta)  # last: it records the sha256 of every file written before it
    # after index.json: a reader never misses a recorded file; older generations' files go
    for old in [*out.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"), out / "ivf.safetensors"]:
        if old.name != keep:
            old.unlink(missing_ok=True)
