"""Build, update and load a search index (see the package docstring for the files and their contract).

Ingestion is prepare's: `scan_folder` (path safety, hidden files, links), `decode_files` (pool of decode workers,
Pillow draft mode, EXIF, pixel cap, any mode → RGB, plain square resize) and its reject reasons. Embedding is
`mwa_cli.eval.embed.embed_images` (mean = std = 0.5, plain resize), the same as `mwa eval`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from mwa_cli import __version__, integrity
from mwa_cli.errors import CheckpointError, ConfigError, DataError, IntegrityError
from mwa_cli.fileio import sha256_file
from mwa_cli.outdir import FolderLock, is_empty, read_marker, remove_temp, write_marker

SCHEMA_VERSION = 1
TEMP_PATTERNS = (".staging_*", ".*.tmp")  # decoded photos of one run; atomic writes' temporary files
_DAMAGED_HINT = "rebuild the index: run the same `mwa index PHOTOS_DIR ... --out INDEX_DIR --rebuild` again"
INDEX_FILE = "index.json"
EMB_FILE = "embeddings.safetensors"
MANIFEST_FILE = "manifest.csv"
CAPTIONS_FILE = "captions.csv"
REJECTED_FILE = "rejected.csv"
MANIFEST_COLUMNS = ["path", "image_id", "row", "size", "mtime_ns", "width", "height"]
CAPTION_COLUMNS = ["caption", "label", "image_id", "path", "n_images"]
EXIT_DATA = 3  # unusable input (as prepare)
IDENTITY_KEYS = ("adapter_config_sha256", "adapter_weights_sha256", "backbone", "backbone_weights_sha256")


# ------------------------------------------------------------------------------------------------ the model
@dataclass
class SearchModel:
    """An adapted model ready to embed queries, with its tokenizer and identity."""

    model: Any
    tokenizer: Any
    info: Any
    method: str
    run_dir: Path
    identity: dict[str, Any]
    device: torch.device
    weights: str | None = None
    tokenizer_path: str | None = None

    @property
    def image_size(self) -> int:
        return int(self.model.config.img_size)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        from mwa_cli.eval.embed import embed_texts

        ids, mask = self.tokenizer.encode_batch(texts)
        return embed_texts(self.model, ids, mask, device=self.device).cpu()

    @torch.inference_mode()
    def encode_pixels(self, images_u8: np.ndarray) -> torch.Tensor:
        """Embeddings of uint8 [B, S, S, 3] images (already square-resized)."""

        return self.embed_rows(images_u8, np.arange(len(images_u8)))

    @torch.inference_mode()
    def embed_rows(self, images: np.ndarray, rows: Any, *, batch_size: int = 64, progress: Any = None
                   ) -> torch.Tensor:
        """Embeddings of rows `rows` of uint8 [*, S, S, 3] `images` (an image cache or staging memmap)."""
        from mwa_cli.eval.embed import embed_images

        return embed_images(self.model, images, rows, image_size=self.image_size, device=self.device,
                            batch_size=batch_size, progress=progress).cpu()


def adapter_identity(run_dir: str | Path) -> dict[str, Any]:
    """What ties an index to its adapter: hashes of adapter_config.json and the adapter weights, the backbone
    name and its weights' sha256 (as recorded in adapter_config.json). Cheap: no model is built."""
    from mwa_cli.adapters.io import CONFIG_FILE, WEIGHTS_FILE, read_adapter_config

    folder, cfg = read_adapter_config(run_dir)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing", hint="pass a finished run folder written by `mwa train`")
    backbone = cfg.get("backbone") or {}
    return {"adapter_config_sha256": sha256_file(folder / CONFIG_FILE),
            "adapter_weights_sha256": sha256_file(weights),
            "backbone": backbone.get("name"),
            "backbone_weights_sha256": backbone.get("weights_sha256"),
            "method": cfg.get("method")}


def model_identity(path: str | Path) -> dict[str, Any]:
    """`adapter_identity` of a run folder, or the identity an export directory recorded (the same hashes)."""
    from mwa_cli.export.runtime import is_export_dir, read_manifest

    if is_export_dir(path):
        return dict(read_manifest(path)["identity"])
    return adapter_identity(path)


def load_search_model(run_dir: str | Path, *, weights: str | None = None, tokenizer: str | None = None,
                      device: str = "auto", need_tokenizer: bool = True) -> Any:
    """Rebuild the run's adapted model (as `mwa eval` does: same seed, weights and tokenizer as training), or,
    for a folder written by `mwa export`, open its ONNX graphs in onnxruntime (no PyTorch model is built)."""
    from mwa_cli.export.runtime import ExportedModel, is_export_dir

    if is_export_dir(run_dir):
        if weights or tokenizer:
            raise ConfigError("--weights and --tokenizer do not apply to an exported model (it holds both)")
        return ExportedModel.load(run_dir, need_tokenizer=need_tokenizer)
    from mwa_cli.adapters.io import load_adapter, read_adapter_config
    from mwa_cli.eval.evaluate import load_tokenizer
    from mwa_cli.train.config import resolve_device

    folder, cfg = read_adapter_config(run_dir)
    run_cfg: dict[str, Any] = {}
    if (folder / "config.json").is_file():
        try:
            run_cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except ValueError:
            run_cfg = {}
    identity = adapter_identity(folder)
    weights = weights or run_cfg.get("weights")
    tokenizer = tokenizer or run_cfg.get("tokenizer")
    # Same seed as training before building: a randomly initialised backbone (test presets) comes out identical.
    torch.manual_seed(int(run_cfg.get("seed", 0) or 0))
    model, applied, info = load_adapter(folder, weights=weights, tokenizer=tokenizer)
    dev = resolve_device(device)
    model.to(dev)
    model.eval()
    tok = None
    tok_path = tokenizer or getattr(info, "tokenizer_path", None)
    if need_tokenizer:
        text_len = int(run_cfg.get("text_len") or model.config.text_len)
        tok = load_tokenizer(tok_path, text_len, model=model)  # applies the adapter's vocabulary extension
    return SearchModel(model=model, tokenizer=tok, info=info, method=applied.name, run_dir=folder,
                       identity=identity, device=dev, weights=getattr(info, "weights", None) or weights,
                       tokenizer_path=tok_path)


def check_identity(index_identity: dict[str, Any], identity: dict[str, Any], index_dir: Path,
                   built_with: str | None) -> None:
    """Refuse an index made with another adapter or backbone, saying which one differs."""
    def short(v: Any) -> str:
        return "none" if v is None else str(v)[:12]

    if index_identity.get("backbone") != identity.get("backbone") or \
            index_identity.get("backbone_weights_sha256") != identity.get("backbone_weights_sha256"):
        raise CheckpointError(
            f"the index {index_dir} was built with backbone {index_identity.get('backbone')} "
            f"(weights {short(index_identity.get('backbone_weights_sha256'))}), but this adapter uses "
            f"{identity.get('backbone')} (weights {short(identity.get('backbone_weights_sha256'))}); "
            "their embeddings are not comparable",
            hint=f"search with the adapter that built it ({built_with}), or rebuild the index "
                 "with `mwa index PHOTOS_DIR --adapter RUN_DIR --out NEW_DIR` (or --rebuild)")
    if any(index_identity.get(k) != identity.get(k) for k in ("adapter_config_sha256", "adapter_weights_sha256")):
        raise CheckpointError(
            f"the index {index_dir} was built with another adapter ({built_with}, {index_identity.get('method')}, "
            f"weights {short(index_identity.get('adapter_weights_sha256'))}); this one is "
            f"{identity.get('method')}, weights {short(identity.get('adapter_weights_sha256'))}: "
            "their embeddings are not comparable",
            hint=f"search with the adapter that built it ({built_with}), or rebuild the index "
                 "with `mwa index PHOTOS_DIR --adapter RUN_DIR --out NEW_DIR` (or --rebuild)")


@dataclass
class ModelSource:
    """Where the model of an index comes from: a run folder or an export folder, already checked against it."""

    path: Path
    exported: bool
    meta: dict[str, Any]

    def load(self, *, weights: str | None = None, tokenizer: str | None = None, device: str = "auto",
             need_tokenizer: bool = True) -> Any:
        """The model (a SearchModel, or an onnxruntime ExportedModel for an export folder)."""
        if self.exported:
            return load_search_model(self.path, weights=weights, tokenizer=tokenizer, need_tokenizer=need_tokenizer)
        return load_search_model(self.path, weights=weights or self.meta.get("weights"),
                                 tokenizer=tokenizer or self.meta.get("tokenizer"), device=device,
                                 need_tokenizer=need_tokenizer)


def model_for_index(meta: dict[str, Any], index_dir: str | Path, *, adapter: str | Path | None = None,
                    model: str | Path | None = None) -> ModelSource:
    """The model that queries an index: `adapter` (a run folder), `model` (an export folder), or by default the
    one that built it. Refuses, before anything heavy is loaded, one made with another adapter or backbone."""
    from mwa_cli.export.runtime import is_export_dir

    if adapter is not None and model is not None:
        raise ConfigError("give --adapter or --model, not both")
    path = Path(adapter or model or meta.get("model") or meta.get("adapter") or "")
    if model is None and adapter is None and meta.get("model") and not Path(meta["model"]).exists() \
            and meta.get("adapter") and Path(meta["adapter"]).exists():
        path = Path(meta["adapter"])  # the export that built it was moved: its run (same identity) answers
    check_identity(meta.get("identity") or {}, model_identity(path), Path(index_dir),
                   meta.get("model") or meta.get("adapter"))
    return ModelSource(path=path, exported=is_export_dir(path), meta=meta)


# ------------------------------------------------------------------------------------------------ the index
@dataclass
class SearchIndex:
    """A loaded index: embeddings (CPU float32), file manifest, caption set and metadata."""

    path: Path
    meta: dict[str, Any]
    images: torch.Tensor                   # [M, d]
    manifest: pd.DataFrame                 # one row per file
    captions: pd.DataFrame | None = None   # one row per caption
    caption_emb: torch.Tensor | None = None
    row_paths: list[list[str]] = field(default_factory=list)   # row -> file paths (sorted; first = canonical)
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
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        index_dir = Path(index_dir)
        meta = read_index_meta(index_dir)
        emb_path = index_dir / EMB_FILE
        try:
            with safe_open(str(emb_path), framework="pt") as fh:
                gen = (fh.metadata() or {}).get("generation")
                images = fh.get_tensor("images")
                caption_emb = fh.get_tensor("captions") if "captions" in fh.keys() else None
        except (SafetensorError, OSError, FileNotFoundError) as exc:
            raise DataError(f"cannot read {emb_path}: {exc}", hint="rebuild it with `mwa index ... --rebuild`",
                            exit_code=EXIT_DATA) from None
        if gen != meta.get("generation"):
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
        if set(rows.tolist()) != set(range(images.shape[0])) or (manifest["path"] == "").any():
            raise mismatch  # every embedding row belongs to at least one photo
        row_paths: list[list[str]] = [[] for _ in range(images.shape[0])]
        row_ids = [""] * images.shape[0]
        for p, i, r in zip(manifest["path"], manifest["image_id"], rows):
            row_paths[r].append(p)
            row_ids[r] = i
        if captions is not None and len(captions) != caption_emb.shape[0]:
            raise DataError(f"{index_dir / CAPTIONS_FILE} does not match the embeddings",
                            hint="run the same `mwa index` again", exit_code=EXIT_DATA)
        return cls(path=index_dir, meta=meta, images=images.float().contiguous(), manifest=manifest,
                   captions=captions, caption_emb=None if caption_emb is None else caption_emb.float().contiguous(),
                   row_paths=row_paths, row_ids=row_ids)


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
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="run the same `mwa index` again",
                        exit_code=EXIT_DATA) from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} holds {type(meta).__name__}, not the object `mwa index` writes",
                        hint="run the same `mwa index ... --rebuild` again", exit_code=EXIT_DATA)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path} has schema_version {meta.get('schema_version')!r}, this mwa reads {SCHEMA_VERSION}",
                        hint="rebuild the index with this mwa version (`mwa index ... --rebuild`)",
                        exit_code=EXIT_DATA)
    return meta


# ------------------------------------------------------------------------------------------------ building
def default_index_dir(run_dir: Path, photos: Path) -> Path:
    return Path(run_dir) / f"index_{Path(photos).resolve().name or 'photos'}"


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def _write_all(out: Path, images: torch.Tensor, manifest: pd.DataFrame, captions: pd.DataFrame | None,
               caption_emb: torch.Tensor | None, rejected: pd.DataFrame, meta: dict[str, Any],
               ivf: Any = None) -> None:
    """Every file to a temporary name then os.replace; index.json last, so readers see old or new."""
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


def _update_approx(old: "SearchIndex | None", old_approx: dict[str, Any] | None, images: torch.Tensor,
                   row_ids: list[str], generation: str, *, approx: bool, nlist: int | None,
                   kind: str | None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The new generation's approximate index: the old one updated in place (keys added / removed) when it is
    usable and was built with the same options, else a new one. Returns (index, index.json record, summary)."""
    from mwa_cli.search.approx import ApproxIndex, approx_file, image_keys

    kind_option = (kind or "auto") if approx else (old_approx or {}).get("kind_option", "auto")
    nlist_option = nlist if approx else (old_approx or {}).get("nlist_option")
    t0 = time.perf_counter()
    vectors = images.float().numpy()
    keys = image_keys(row_ids)
    ivf, how = None, "built"
    same_options = old_approx is not None and old_approx.get("kind_option", "auto") == kind_option and \
        old_approx.get("nlist_option") == nlist_option
    if old is not None and same_options:
        try:
            ivf = old.ivf()
        except (DataError, ConfigError, IntegrityError):
            ivf = None
    if ivf is not None:
        old_keys = image_keys(old.row_ids)  # type: ignore[union-attr]
        gone = np.setdiff1d(old_keys, keys)
        new_mask = ~np.isin(keys, old_keys)
        ivf.remove(gone)
        ivf.add(vectors[new_mask], keys[new_mask])
        how = "updated" if len(gone) or new_mask.any() else "unchanged"
        if ivf.ntotal != len(keys) or ivf.needs_retraining():
            ivf, how = None, "rebuilt"
    if ivf is None:
        ivf = ApproxIndex.build(vectors, keys, kind=kind_option, nlist=nlist_option)
        how = "built" if how == "built" and old_approx is None else "rebuilt"
    seconds = time.perf_counter() - t0
    import faiss

    record = {"kind": ivf.kind, "file": approx_file(generation), "nlist": ivf.nlist, "nlist_option": nlist_option,
              "kind_option": kind_option, "rows": ivf.ntotal, "trained_rows": ivf.trained_rows,
              "library": f"faiss {faiss.__version__}"}
    summary = {"kind": ivf.kind, "nlist": ivf.nlist, "rebuilt": how in ("built", "rebuilt"), "how": how,
               "seconds": round(seconds, 3)}
    return ivf, record, summary


def _caption_set(data_dir: Path) -> tuple[pd.DataFrame, str | None]:
    """Distinct caption texts of a prepared data dir (first image, label and path kept), and its dataset hash."""
    from mwa_cli.data.manifest import load_dataset_info, load_manifest

    df = load_manifest(data_dir)
    info = load_dataset_info(data_dir)
    df = df[df["caption"].str.strip() != ""]
    if len(df) == 0:
        raise DataError(f"{data_dir} holds no captions", hint="give a data dir made by `mwa prepare`",
                        exit_code=EXIT_DATA)
    counts = df.groupby("caption", sort=False)["image_id"].nunique()
    first = df.drop_duplicates("caption", keep="first")
    out = pd.DataFrame({"caption": first["caption"].to_numpy(), "label": first["label"].to_numpy(),
                        "image_id": first["image_id"].to_numpy(), "path": first["path"].to_numpy(),
                        "n_images": counts.loc[first["caption"]].to_numpy()}, columns=CAPTION_COLUMNS)
    return out.reset_index(drop=True), info.get("dataset_hash")


def build_index(photos_dir: str | Path, run_dir: str | Path, out_dir: str | Path | None = None, *,
                captions_dir: str | Path | None = None, weights: str | None = None, tokenizer: str | None = None,
                device: str = "auto", batch_size: int = 64, workers: int | None = None, progress: bool = True,
                rebuild: bool = False, max_pixels: int | None = None, chunk: int = 512,
                search_model: SearchModel | None = None, approx: bool = False,
                nlist: int | None = None, approx_kind: str | None = None) -> dict[str, Any]:
    """Embed every photo of `photos_dir` (new or changed ones only, when `out_dir` already holds an index made
    by the same adapter) and write the index. Returns a summary dict (the `--json` output).

    `approx` also builds the faiss index of `mwa search --nprobe` (`approx_kind` auto or one of
    mwa_cli.search.approx.KINDS, `nlist` lists, default ≈ 2·√N). Once an index has one, re-runs update it in place (new photos added, removed ones
    taken out; retrained only when the archive has grown 4× or the options changed); `rebuild` drops it unless
    `approx` is given again."""
    from mwa_cli.data.images import DEFAULT_MAX_PIXELS
    from mwa_cli.search.approx import KINDS as APPROX_KINDS

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    if nlist is not None and nlist < 1:
        raise ConfigError(f"--nlist must be at least 1 (got {nlist})")
    if approx_kind is not None and approx_kind not in ("auto", *APPROX_KINDS):
        raise ConfigError(f"unknown --approx-kind {approx_kind!r}", hint=f"choose auto, {', '.join(APPROX_KINDS)}")
    if (nlist is not None or approx_kind is not None) and not approx:
        raise ConfigError("--nlist and --approx-kind set up the approximate index: they go with --approx",
                          hint="e.g. mwa index PHOTOS_DIR --adapter RUN_DIR --approx --nlist 1024")
    t0 = time.perf_counter()
    photos = Path(photos_dir).expanduser()
    if not photos.exists():
        raise DataError(f"photos folder not found: {photos}", hint="give the folder that holds your photos",
                        exit_code=EXIT_DATA)
    if not photos.is_dir():
        raise DataError(f"{photos} is a file, not a folder", hint="give the folder that holds your photos",
                        exit_code=EXIT_DATA)
    root = photos.resolve()
    out = Path(out_dir).expanduser().resolve() if out_dir else default_index_dir(Path(run_dir), root).resolve()
    if out == root:
        raise ConfigError("--out must differ from the photos folder", hint="e.g. --out photos_index")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="choose a folder name")
    max_pixels = int(max_pixels or DEFAULT_MAX_PIXELS)
    identity = model_identity(run_dir)  # a bad --adapter / --model is refused before the folder is claimed
    with claim_index_dir(out):
        return _build_into(root, Path(run_dir), out, identity, t0, captions_dir=captions_dir, weights=weights,
                           tokenizer=tokenizer, device=device, batch_size=batch_size, workers=workers,
                           progress=progress, rebuild=rebuild, max_pixels=max_pixels, chunk=chunk,
                           search_model=search_model, approx=approx, nlist=nlist, approx_kind=approx_kind)


def is_index_dir(path: Path) -> bool:
    """A folder mwa made with `mwa index`: its marker, or (older versions) an index.json mwa wrote."""
    if read_marker(path, "index") is not None:
        return True
    try:
        meta = json.loads((Path(path) / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "schema_version" in meta and "generation" in meta


@contextlib.contextmanager
def claim_index_dir(out: Path) -> Iterator[None]:
    """Make `out` this `mwa index`'s own while it runs (docs/formats.md, "Rules"): a folder holding files mwa did
    not write is refused untouched (even with --rebuild); the folder is locked, marked, and cleared of what a
    killed `mwa index` left, so the next run after a kill just works."""
    if not is_empty(out) and not is_index_dir(out):
        names = sorted(p.name for p in out.iterdir())[:4]
        raise ConfigError(f"--out {out} holds files mwa did not write ({', '.join(names)}): nothing in it is changed",
                          hint="choose a new or empty folder for --out")
    created = not out.exists()
    try:
        with FolderLock(out, "index"):
            write_marker(out, "index")
            remove_temp(out, TEMP_PATTERNS)
            yield
    except BaseException:
        if created:  # a first run that failed or was stopped leaves no folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def _build_into(root: Path, run_dir: Path, out: Path, identity: dict[str, Any], t0: float, *,
                captions_dir: str | Path | None, weights: str | None, tokenizer: str | None, device: str,
                batch_size: int, workers: int | None, progress: bool, rebuild: bool, max_pixels: int, chunk: int,
                search_model: SearchModel | None, approx: bool, nlist: int | None,
                approx_kind: str | None) -> dict[str, Any]:
    """The body of `build_index`, run while the index folder is claimed."""
    from mwa_cli.data import cache as _cache
    from mwa_cli.data import ingest
    from mwa_cli.data.manifest import REJECTED_COLUMNS

    # ---------------------------------------------------------------- previous index (identity first: cheap)
    old: SearchIndex | None = None
    if (out / INDEX_FILE).is_file() and not rebuild:
        old_meta = read_index_meta(out)
        check_identity(old_meta.get("identity") or {}, identity, out, old_meta.get("adapter"))
        try:
            old = SearchIndex.load(out)
        except (DataError, IntegrityError):
            old = None  # damaged: rebuild from scratch

    sm = search_model or load_search_model(run_dir, weights=weights, tokenizer=tokenizer, device=device,
                                           need_tokenizer=captions_dir is not None)
    if sm.identity != identity:  # pragma: no cover - a run dir rewritten while we ran
        raise CheckpointError(f"{run_dir} changed while indexing", hint="run again")
    size = sm.image_size
    if approx and getattr(sm.model, "image_vectors", 1) > 1:
        raise ConfigError(f"--approx is not available for {identity.get('backbone')}: it embeds each photo as "
                          f"{sm.model.image_vectors} vectors (one per query token), which the IVF index does not hold",
                          hint="index without --approx (exact search; a query scores every query-token vector, "
                               f"{sm.model.image_vectors}x the work of a one-vector index of the same size)")

    # ---------------------------------------------------------------- scan (prepare's rules)
    scan = ingest.scan_folder(root, exclude=[out])
    rejected: list[tuple[str, str, str]] = [(r.path, "" if r.row is None else str(r.row), r.reason)
                                            for r in scan.rejected]
    for rel in scan.other:
        rejected.append((rel, "", f"not an image file type ({Path(rel).suffix or 'no extension'})"))
    keys = sorted(scan.files)
    if not keys and old is None:
        raise DataError(f"no photos found in {root}" + (f" ({len(scan.other)} other files, none an image)"
                                                       if scan.other else ""),
                        hint="give the folder that holds your photos (jpg, png, tif, bmp, webp...)",
                        exit_code=EXIT_DATA)

    old_by_path: dict[str, tuple] = {}
    old_emb_by_id: dict[str, int] = {}
    same_source = old is not None and old.meta.get("source") == str(root)
    if old is not None:
        for p, i, r, s, m, w, h in old.manifest[MANIFEST_COLUMNS].itertuples(index=False):
            old_by_path[p] = (i, int(r), int(s), int(m), int(w), int(h))
            old_emb_by_id[i] = int(r)

    records: dict[str, dict] = {}   # rel -> {image_id, size, mtime_ns, width, height}
    todo: list[tuple[str, str, None]] = []
    stats: dict[str, tuple[int, int] | None] = {}
    for key in keys:
        rel = scan.files[key]
        st = stats[rel] = _stat(root / rel)
        prev = old_by_path.get(rel) if same_source else None
        if prev and st and (prev[2], prev[3]) == st:
            records[rel] = {"image_id": prev[0], "size": st[0], "mtime_ns": st[1], "width": prev[4],
                            "height": prev[5]}
        else:
            todo.append((str(root / rel), rel, None))

    # ---------------------------------------------------------------- decode + embed, chunk by chunk
    new_emb: dict[str, torch.Tensor] = {}
    embed_s = 0.0
    n_embedded = 0
    from mwa_cli.commands.progress import photo_bar  # until build_index takes the command's progress callback

    bar = photo_bar(progress and bool(todo))
    task = bar.add_task("indexing photos", total=len(todo)) if bar is not None else None
    if bar is not None:
        bar.start()
    staging = out / f".staging_{uuid.uuid4().hex[:8]}.u8"
    t_loop = time.perf_counter()
    try:
        for c0 in range(0, len(todo), chunk):
            part = todo[c0:c0 + chunk]
            results = _cache.decode_files(part, size, staging, max_pixels=max_pixels, workers=workers,
                                          progress=False)
            mm = np.memmap(staging, dtype=np.uint8, mode="r", shape=(max(len(part), 1), size, size, 3))
            rows, ids = [], []
            done_now = 0
            for r in results:
                rel = r["rel"]
                if "reject" in r:
                    rejected.append((rel, "", r["reject"]))
                    done_now += 1
                    continue
                st = stats.get(rel) or (0, 0)
                records[rel] = {"image_id": r["image_id"], "size": st[0], "mtime_ns": st[1], "width": r["width"],
                                "height": r["height"]}
                if r["image_id"] in old_emb_by_id or r["image_id"] in new_emb or r["image_id"] in ids:
                    done_now += 1  # same content as a photo already embedded (touched, renamed or copied)
                    continue
                rows.append(r["row"])
                ids.append(r["image_id"])
            if bar is not None and done_now:
                bar.advance(task, done_now)
            if rows:
                t1 = time.perf_counter()
                emb = torch.as_tensor(sm.embed_rows(mm, rows, batch_size=batch_size,
                                                    progress=(lambda n: bar.advance(task, n)) if bar is not None
                                                    else None))
                embed_s += time.perf_counter() - t1
                n_embedded += len(rows)
                for i, e in zip(ids, emb):
                    new_emb[i] = e.clone()
            del mm
    finally:
        if bar is not None:
            bar.stop()
        staging.unlink(missing_ok=True)
    loop_s = time.perf_counter() - t_loop

    # ---------------------------------------------------------------- assemble: one row per distinct content
    paths = sorted(records, key=lambda p: ingest.nfc(p))
    row_of: dict[str, int] = {}
    vectors: list[torch.Tensor] = []
    man_rows = []
    for rel in paths:
        rec = records[rel]
        i = rec["image_id"]
        if i not in row_of:
            row_of[i] = len(vectors)
            vectors.append(new_emb[i] if i in new_emb else old.images[old_emb_by_id[i]])  # type: ignore[union-attr]
        man_rows.append({"path": rel, "image_id": i, "row": row_of[i], "size": rec["size"],
                         "mtime_ns": rec["mtime_ns"], "width": rec["width"], "height": rec["height"]})
    if not vectors:
        raise DataError(f"none of the {len(keys)} photo(s) in {root} could be used",
                        hint=f"see the reasons in {out / REJECTED_FILE}" if rejected else None, exit_code=EXIT_DATA)
    dim = int(vectors[0].shape[-1])  # [d], or [Q, d] for multi-vector images (BLIP-2)
    images = torch.stack(vectors)
    manifest = pd.DataFrame(man_rows, columns=MANIFEST_COLUMNS)
    rej_df = pd.DataFrame(sorted(rejected), columns=REJECTED_COLUMNS)

    # ---------------------------------------------------------------- caption set (re-embedded only if changed)
    captions, caption_emb, cap_meta, cap_embedded = None, None, None, 0
    if captions_dir is not None:
        cdir = Path(captions_dir).expanduser().resolve()
        captions, ds_hash = _caption_set(cdir)
        prev = (old.meta.get("captions") or {}) if old is not None else {}
        if old is not None and old.caption_emb is not None and prev.get("dataset_hash") == ds_hash and ds_hash:
            caption_emb = old.caption_emb
        else:
            if sm.tokenizer is None:  # pragma: no cover - need_tokenizer was set above
                raise ConfigError("no tokenizer to embed captions")
            caption_emb = torch.as_tensor(sm.encode_texts(list(captions["caption"])))
            cap_embedded = len(captions)
        cap_meta = {"data_dir": str(cdir), "dataset_hash": ds_hash, "count": len(captions)}
    elif old is not None and old.caption_emb is not None:
        captions, caption_emb, cap_meta = old.captions, old.caption_emb, old.meta.get("captions")

    # ---------------------------------------------------------------- approximate index, when asked or held
    generation = uuid.uuid4().hex
    ivf, approx_meta, approx_summary = None, None, None
    old_approx = (old.meta.get("approx") or None) if old is not None else None
    if approx or old_approx:
        row_ids = [""] * int(images.shape[0])
        for i, r in row_of.items():
            row_ids[r] = i
        ivf, approx_meta, approx_summary = _update_approx(old, old_approx, images, row_ids, generation,
                                                          approx=approx, nlist=nlist, kind=approx_kind)

    old_paths = set(old_by_path) if same_source else set()
    removed = len(old_paths - set(records)) if same_source else 0
    counts = {
        "files_found": len(keys) + len(scan.other) + len(scan.rejected),
        "files_indexed": len(manifest),
        "images": int(images.shape[0]),
        "duplicates_merged": len(manifest) - int(images.shape[0]),
        "embedded": n_embedded,
        "reused": len(records) - n_embedded,
        "removed": removed,
        "rejected": len(rej_df),
        "captions": 0 if captions is None else len(captions),
        "captions_embedded": cap_embedded,
    }
    meta = {
        "schema_version": SCHEMA_VERSION,
        "generation": generation,
        "identity": identity,
        "adapter": str(sm.run_dir.resolve()),
        "model": str(sm.path) if hasattr(sm, "manifest") else None,   # the export directory, when one built it
        "method": sm.method,
        "weights": sm.weights,
        "tokenizer": sm.tokenizer_path,
        "source": str(root),
        "image_size": size,
        "dim": dim,
        "counts": counts,
        "captions": cap_meta,
        "approx": approx_meta,
        "max_pixels": max_pixels,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mwa_version": __version__,
    }
    _write_all(out, images, manifest, captions, caption_emb, rej_df, meta, ivf=ivf)
    wall = time.perf_counter() - t0
    return {"index": str(out), "source": str(root), "adapter": meta["adapter"], "method": sm.method,
            "backbone": identity["backbone"], "counts": counts, "seconds": round(wall, 3),
            "embed_seconds": round(embed_s, 3),
            "processed": len(todo), "process_seconds": round(loop_s, 3),
            # photos decoded + embedded per second (model load and writing excluded); None when nothing was new
            "images_per_s": round(len(todo) / loop_s, 2) if n_embedded and loop_s > 0 else None,
            "approx": approx_summary,
            "rejected_csv": str(out / REJECTED_FILE)}
