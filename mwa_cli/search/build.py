"""Build or update a search index (`build_index`, `mwa index`): new or changed photos embedded, the rest reused.

Ingestion is prepare's: `scan_folder` (path safety, hidden files, links), `decode_files` (pool of decode workers,
Pillow draft mode, EXIF, pixel cap, any mode → RGB, plain square resize) and its reject reasons. Embedding is
`mwa_cli.eval.embed.embed_images` (mean = std = 0.5, plain resize), the same as `mwa eval`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from mwa_cli import __version__
from mwa_cli.data.cache import ProgressCallback
from mwa_cli.errors import EXIT_DATA, CheckpointError, ConfigError, DataError, IntegrityError
from mwa_cli.finite import require_finite
from mwa_cli.outdir import FolderLock, is_empty, remove_temp, write_marker
from mwa_cli.search.model import SearchModel, check_identity, load_search_model, model_identity
from mwa_cli.search.store import (
    CAPTION_COLUMNS,
    INDEX_FILE,
    MANIFEST_COLUMNS,
    REJECTED_FILE,
    SCHEMA_VERSION,
    SearchIndex,
    is_index_dir,
    read_index_meta,
    write_index,
)

TEMP_PATTERNS = (".staging_*", ".*.tmp")  # decoded photos of one run; atomic writes' temporary files


def default_index_dir(run_dir: Path, photos: Path) -> Path:
    return Path(run_dir) / f"index_{Path(photos).resolve().name or 'photos'}"


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


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
                device: str = "auto", batch_size: int = 64, workers: int | None = None,
                progress: ProgressCallback | None = None, rebuild: bool = False, max_pixels: int | None = None, chunk: int = 512,
                search_model: SearchModel | None = None, approx: bool = False,
                nlist: int | None = None, approx_kind: str | None = None,
                line: dict[str, Any] | None = None) -> dict[str, Any]:
    """Embed every photo of `photos_dir` (new or changed ones only, when `out_dir` already holds an index made
    by the same adapter) and write the index. Returns a summary dict (the `--json` output).

    `line` (from `mwa index --line`) is recorded as index.json's `"line"`: the line version the adapter is.
    `approx` also builds the faiss index of `mwa search --nprobe` (`approx_kind` auto or one of
    mwa_cli.search.approx.KINDS, `nlist` lists, default ≈ 2·√N). Once an index has one, re-runs update it in place (new photos added, removed ones
    taken out; retrained only when the archive has grown 4× or the options changed); `rebuild` drops it unless
    `approx` is given again. `progress(done, total)` is called as the new photos are decoded and embedded."""
    from mwa_cli.data.images import DEFAULT_MAX_PIXELS
    from mwa_cli.search.approx import KINDS as APPROX_KINDS

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
    if workers is not None and not 1 <= workers <= 1024:
        raise ConfigError(f"--workers must be a whole number from 1 to 1024 (got {workers}); more than the CPU "
                          "cores are capped to them")
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
                           search_model=search_model, approx=approx, nlist=nlist, approx_kind=approx_kind,
                           line=line)


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
            remove_temp(out, TEMP_PATTERNS)  # first: on a full disk a killed run's leftovers hold the space
            write_marker(out, "index")
            yield
    except BaseException:
        if created:  # a first run that failed or was stopped leaves no folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def _build_into(root: Path, run_dir: Path, out: Path, identity: dict[str, Any], t0: float, *,
                captions_dir: str | Path | None, weights: str | None, tokenizer: str | None, device: str,
                batch_size: int, workers: int | None, progress: ProgressCallback | None, rebuild: bool, max_pixels: int,
                chunk: int,
                search_model: SearchModel | None, approx: bool, nlist: int | None,
                approx_kind: str | None, line: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of `build_index`, run while the index folder is claimed."""
    from mwa_cli.data.manifest import REJECTED_COLUMNS

    old = _previous_index(out, identity, rebuild)
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
    plan = _plan(root, out, old)
    t_loop = time.perf_counter()
    new_emb, embed_s = _embed_new(plan, sm, out, max_pixels=max_pixels, workers=workers, batch_size=batch_size,
                                  chunk=chunk, progress=progress)
    loop_s = time.perf_counter() - t_loop
    images, manifest, row_ids = _assemble(plan, new_emb, old, root, out)
    rej_df = pd.DataFrame(sorted(plan.rejected), columns=REJECTED_COLUMNS)
    captions, caption_emb, cap_meta, cap_embedded = _caption_embeddings(captions_dir, old, sm)

    generation = uuid.uuid4().hex
    ivf, approx_meta, approx_summary = None, None, None
    old_approx = (old.meta.get("approx") or None) if old is not None else None
    if approx or old_approx:
        ivf, approx_meta, approx_summary = _update_approx(old, old_approx, images, row_ids, generation,
                                                          approx=approx, nlist=nlist, kind=approx_kind)
    counts = {
        "files_found": plan.files_found,
        "files_indexed": len(manifest),
        "images": int(images.shape[0]),
        "duplicates_merged": len(manifest) - int(images.shape[0]),
        "embedded": len(new_emb),
        "reused": len(plan.records) - len(new_emb),
        "removed": len(plan.old_paths - set(plan.records)),
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
        "dim": int(images.shape[-1]),  # [d], or [Q, d] for multi-vector images (BLIP-2)
        "counts": counts,
        "captions": cap_meta,
        "approx": approx_meta,
        "max_pixels": max_pixels,
        "line": line,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mwa_version": __version__,
    }
    write_index(out, images, manifest, captions, caption_emb, rej_df, meta, ivf=ivf)
    wall = time.perf_counter() - t0
    return {"index": str(out), "source": str(root), "adapter": meta["adapter"], "method": sm.method,
            "backbone": identity["backbone"], "counts": counts, "seconds": round(wall, 3),
            "embed_seconds": round(embed_s, 3),
            "processed": len(plan.todo), "process_seconds": round(loop_s, 3),
            # photos decoded + embedded per second (model load and writing excluded); None when nothing was new
            "images_per_s": round(len(plan.todo) / loop_s, 2) if new_emb and loop_s > 0 else None,
            "approx": approx_summary,
            "rejected_csv": str(out / REJECTED_FILE)}


def _previous_index(out: Path, identity: dict[str, Any], rebuild: bool) -> SearchIndex | None:
    """The index already in `out`, to reuse its embeddings (None: none, --rebuild, or damaged). One made with
    another adapter or backbone is refused (identity first: cheap)."""
    if not (out / INDEX_FILE).is_file() or rebuild:
        return None
    old_meta = read_index_meta(out)
    check_identity(old_meta.get("identity") or {}, identity, out, old_meta.get("adapter"))
    try:
        return SearchIndex.load(out)
    except (DataError, IntegrityError):
        return None  # damaged: rebuild from scratch


@dataclass
class _Plan:
    """What a run does: the files whose stored embedding is reused (`records` so far), those to decode and embed
    (`todo`), and the rejects; `_embed_new` adds the decoded files' records and rejects."""

    images_found: int
    files_found: int
    records: dict[str, dict[str, Any]]        # rel path -> {image_id, size, mtime_ns, width, height}
    todo: list[tuple[str, str, None]]         # (absolute path, rel path, None): decode_files' jobs
    stats: dict[str, tuple[int, int] | None]  # rel path -> (size, mtime_ns) when scanned
    rejected: list[tuple[str, str, str]]      # (path, row, reason)
    old_emb_by_id: dict[str, int] = field(default_factory=dict)   # the previous index's rows by photo id
    old_paths: set[str] = field(default_factory=set)   # its files, when it indexed the same photos folder


def _plan(root: Path, out: Path, old: SearchIndex | None) -> _Plan:
    """Scan the photos folder (prepare's rules) and sort its files into reused (same path, size and mtime as in
    the previous index of the same folder) and to embed."""
    from mwa_cli.data import ingest

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
    plan = _Plan(images_found=len(keys), files_found=len(keys) + len(scan.other) + len(scan.rejected),
                 records={}, todo=[], stats={}, rejected=rejected)
    old_by_path: dict[str, tuple] = {}
    same_source = old is not None and old.meta.get("source") == str(root)
    if old is not None:
        for p, i, r, s, m, w, h in old.manifest[MANIFEST_COLUMNS].itertuples(index=False):
            old_by_path[p] = (i, int(r), int(s), int(m), int(w), int(h))
            plan.old_emb_by_id[i] = int(r)
    if same_source:
        plan.old_paths = set(old_by_path)
    for key in keys:
        rel = scan.files[key]
        st = plan.stats[rel] = _stat(root / rel)
        prev = old_by_path.get(rel) if same_source else None
        if prev and st and (prev[2], prev[3]) == st:
            plan.records[rel] = {"image_id": prev[0], "size": st[0], "mtime_ns": st[1], "width": prev[4],
                                 "height": prev[5]}
        else:
            plan.todo.append((str(root / rel), rel, None))
    return plan


def _embed_new(plan: _Plan, sm: Any, out: Path, *, max_pixels: int, workers: int | None, batch_size: int,
               chunk: int, progress: ProgressCallback | None) -> tuple[dict[str, torch.Tensor], float]:
    """Decode and embed `plan.todo`, `chunk` files at a time (a photo whose content is already embedded is only
    recorded). Returns the new embeddings by photo id and the seconds spent in the model."""
    from mwa_cli.data import cache as _cache

    size = sm.image_size
    new_emb: dict[str, torch.Tensor] = {}
    embed_s = 0.0
    total = len(plan.todo)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    if total:
        advance(0)  # the bar appears before the first chunk is decoded
    staging = out / f".staging_{uuid.uuid4().hex[:8]}.u8"
    try:
        for c0 in range(0, len(plan.todo), chunk):
            part = plan.todo[c0:c0 + chunk]
            results = _cache.decode_files(part, size, staging, max_pixels=max_pixels, workers=workers,
                                          progress=None)
            mm = np.memmap(staging, dtype=np.uint8, mode="r", shape=(max(len(part), 1), size, size, 3))
            rows, ids = [], []
            done_now = 0
            for r in results:
                rel = r["rel"]
                if "reject" in r:
                    plan.rejected.append((rel, "", r["reject"]))
                    done_now += 1
                    continue
                st = plan.stats.get(rel) or (0, 0)
                plan.records[rel] = {"image_id": r["image_id"], "size": st[0], "mtime_ns": st[1],
                                     "width": r["width"], "height": r["height"]}
                if r["image_id"] in plan.old_emb_by_id or r["image_id"] in new_emb or r["image_id"] in ids:
                    done_now += 1  # same content as a photo already embedded (touched, renamed or copied)
                    continue
                rows.append(r["row"])
                ids.append(r["image_id"])
            if done_now:
                advance(done_now)
            if rows:
                t1 = time.perf_counter()
                emb = torch.as_tensor(sm.embed_rows(mm, rows, batch_size=batch_size, progress=advance))
                embed_s += time.perf_counter() - t1
                require_finite(emb, "the model's embeddings of the photos", "the adapter or exported model is "
                               "damaged: train or export it again; nothing was written to the index")
                for i, e in zip(ids, emb):
                    new_emb[i] = e.clone()
            del mm
    finally:
        staging.unlink(missing_ok=True)
    return new_emb, embed_s


def _assemble(plan: _Plan, new_emb: dict[str, torch.Tensor], old: SearchIndex | None, root: Path, out: Path
              ) -> tuple[torch.Tensor, pd.DataFrame, list[str]]:
    """One embedding row per distinct content, rows in path order: (embeddings, manifest, photo id of each row)."""
    from mwa_cli.data import ingest

    paths = sorted(plan.records, key=lambda p: ingest.nfc(p))
    row_of: dict[str, int] = {}
    vectors: list[torch.Tensor] = []
    man_rows = []
    for rel in paths:
        rec = plan.records[rel]
        i = rec["image_id"]
        if i not in row_of:
            row_of[i] = len(vectors)
            vectors.append(new_emb[i] if i in new_emb
                           else torch.from_numpy(np.array(old.images[plan.old_emb_by_id[i]])))  # type: ignore[union-attr]
        man_rows.append({"path": rel, "image_id": i, "row": row_of[i], "size": rec["size"],
                         "mtime_ns": rec["mtime_ns"], "width": rec["width"], "height": rec["height"]})
    if not vectors:
        raise DataError(f"none of the {plan.images_found} photo(s) in {root} could be used",
                        hint=f"see the reasons in {out / REJECTED_FILE}" if plan.rejected else None,
                        exit_code=EXIT_DATA)
    row_ids = [""] * len(vectors)
    for i, r in row_of.items():
        row_ids[r] = i
    return torch.stack(vectors), pd.DataFrame(man_rows, columns=MANIFEST_COLUMNS), row_ids


def _caption_embeddings(captions_dir: str | Path | None, old: SearchIndex | None, sm: Any
                        ) -> tuple[pd.DataFrame | None, torch.Tensor | None, dict[str, Any] | None, int]:
    """The caption set of `captions_dir` (re-embedded only when its dataset hash changed), or the previous index's
    when none is given: (captions, embeddings, index.json record, number embedded now)."""
    if captions_dir is None:
        if old is not None and old.caption_emb is not None:
            return old.captions, old.caption_emb, old.meta.get("captions"), 0
        return None, None, None, 0
    cdir = Path(captions_dir).expanduser().resolve()
    captions, ds_hash = _caption_set(cdir)
    prev = (old.meta.get("captions") or {}) if old is not None else {}
    embedded = 0
    if old is not None and old.caption_emb is not None and prev.get("dataset_hash") == ds_hash and ds_hash:
        caption_emb = old.caption_emb
    else:
        if sm.tokenizer is None:  # pragma: no cover - need_tokenizer was set above
            raise ConfigError("no tokenizer to embed captions")
        caption_emb = torch.as_tensor(sm.encode_texts(list(captions["caption"])))
        require_finite(caption_emb, "the model's embeddings of the captions", "the adapter or exported model is "
                       "damaged: train or export it again; nothing was written to the index")
        embedded = len(captions)
    return captions, caption_emb, {"data_dir": str(cdir), "dataset_hash": ds_hash, "count": len(captions)}, embedded
