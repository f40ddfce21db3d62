"""Evaluate a model on one split of a prepared data dir → the `eval.json` / `eval_topk.json` dicts.

Metrics come from `mwa_cli.eval.metrics` (retrieval_metrics, topk_lists); this module only gathers the split,
embeds it in batches under inference mode and adds the run's identity (method, backbone, dataset hash, time).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mwa_cli.errors import ConfigError, DataError
from mwa_cli.eval.chance import instance_chance
from mwa_cli.eval.embed import embed_images, embed_texts
from mwa_cli.eval.label_level import INSTANCE_PROTOCOL, label_level_metrics, primary_protocol
from mwa_cli.eval.metrics import retrieval_metrics, topk_lists
from mwa_cli.finite import require_finite
from mwa_cli.models.run_tokenizer import load_tokenizer
from mwa_cli.runs import load_run, read_run_config
from mwa_cli.runtime import amp_dtype, resolve_device, resolve_precision

TOPK_MAX_QUERIES = 200  # the report's gallery shows a few; keep eval_topk.json small on big splits


@dataclass
class SplitData:
    """One split: unique images (first-appearance order) and every caption row (manifest file order)."""

    split: str
    image_ids: list[str]
    image_rows: np.ndarray  # cache row of each image
    labels: list[str]  # one per image
    captions: list[str]
    text_to_image: torch.Tensor  # [N_txt] index into image_ids
    caption_indices: list[int]  # index among the split's manifest rows (file order)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def n_captions(self) -> int:
        return len(self.captions)


def image_order(image_ids, labels) -> tuple[list[str], list[str], list[int]]:
    """(unique image ids in first-appearance order, each one's label, each caption row's image index) of a split's
    manifest rows: the order of eval.json's image queries and eval_ranks.json."""
    pos: dict[str, int] = {}
    image_labels: list[str] = []
    t2i = []
    for image_id, label in zip(image_ids, labels):
        if image_id not in pos:
            pos[image_id] = len(pos)
            image_labels.append(str(label or ""))
        t2i.append(pos[image_id])
    return list(pos), image_labels, t2i


def load_split(data_dir: str | Path, split: str, cache) -> SplitData:
    """Gather split `split` from the manifest; `cache` is an ImageCache (for `.index_of`)."""
    from mwa_cli.data.manifest import load_manifest

    df = load_manifest(Path(data_dir))
    sub = df[df["split"] == split]
    if len(sub) == 0:
        raise DataError(f"the {split!r} split of {data_dir} is empty",
                        hint="re-run `mwa prepare` with a larger split, or evaluate another split with --split")
    ids, labels, t2i = image_order(sub["image_id"], sub["label"])
    rows = np.array([cache.index_of(i) for i in ids], dtype=np.int64)
    return SplitData(split=split, image_ids=ids, image_rows=rows, labels=labels, captions=list(sub["caption"]),
                     text_to_image=torch.tensor(t2i, dtype=torch.long), caption_indices=list(range(len(sub))))


def evaluate_model(model, tokenizer, data_dir: str | Path, split: str = "test", *, device: torch.device,
                   dtype: torch.dtype | None = None, batch_size: int = 128, cache=None, split_data=None,
                   topk: bool = True, identity: dict | None = None,
                   ranks_out: dict | None = None) -> tuple[dict, dict | None]:
    """(eval.json dict, eval_topk.json dict or None) for `model` on `split` of `data_dir`.

    `ranks_out`: a dict that receives "query_ranks", the per-query ranks (`mwa_cli.eval.bootstrap.QueryRanks`).

    `tokenizer` needs `encode_batch(texts) -> (ids, mask)`; `identity` adds method/backbone/dataset_hash keys.
    Pass a prepared `split_data` (and `cache`) to avoid re-reading the manifest on repeated evaluations.
    """
    from mwa_cli.data.cache import ensure_cache

    t0 = time.perf_counter()
    size = int(model.config.img_size)
    if cache is None:
        cache = ensure_cache(Path(data_dir), size, progress=False)
    if split_data is None:
        split_data = load_split(data_dir, split, cache)
    ids, mask = tokenizer.encode_batch(split_data.captions)
    img = embed_images(model, cache.array, split_data.image_rows, image_size=size, device=device,
                       batch_size=batch_size, dtype=dtype)
    txt = embed_texts(model, ids, mask, device=device, batch_size=max(batch_size, 256), dtype=dtype)
    for emb, what in ((img, "image"), (txt, "text")):  # a NaN similarity would rank first: recall 100 %
        require_finite(emb, f"the model's {what} embeddings of the {split_data.split} split",
                       "the adapter's weights or the precision overflowed: evaluate with --precision fp32, or "
                       "train the run again with a lower --lr")
    has_labels = any(split_data.labels)
    ranks: dict = {}
    metrics = retrieval_metrics(img, txt, split_data.text_to_image,
                                labels=split_data.labels if has_labels else None, ranks_out=ranks)
    result = {"split": split_data.split}
    result.update(metrics)
    result["chance"] = instance_chance(split_data.text_to_image.numpy())  # a random ranking on these queries
    if not has_labels:
        result.setdefault("per_label", {})
    level_ranks: dict = {}
    result.update(protocol_entries(img, txt, split_data, level_ranks))
    if ranks_out is not None:  # per-query ranks of both protocols, for the bootstrap intervals
        from mwa_cli.eval.bootstrap import QueryRanks

        t2i = split_data.text_to_image.numpy()
        level = QueryRanks(level_ranks["i2t_ranks"].numpy(), level_ranks["t2i_ranks"].numpy(), t2i)
        ranks_out["query_ranks"] = QueryRanks(ranks["i2t_ranks"].numpy(), ranks["t2i_ranks"].numpy(), t2i,
                                              label_level=level)
    top = None
    if topk:
        top = topk_lists(img, txt, split_data.text_to_image, image_ids=split_data.image_ids,
                         split=split_data.split, k=10, caption_indices=split_data.caption_indices,
                         max_queries=TOPK_MAX_QUERIES)
    ident = dict(identity or {})
    result["method"] = ident.get("method")
    result["backbone"] = ident.get("backbone")
    result["dataset_hash"] = ident.get("dataset_hash")
    for key, value in ident.items():
        if key not in result:
            result[key] = value
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return result, top


def protocol_entries(img: torch.Tensor, txt: torch.Tensor, split_data: SplitData,
                     ranks_out: dict | None = None) -> dict:
    """eval.json's `instance_protocol`, `label_level` and `primary_protocol` (eval/label_level.py)."""
    level = label_level_metrics(img, txt, split_data.text_to_image, labels=split_data.labels,
                                captions=split_data.captions, ranks_out=ranks_out)
    return {"instance_protocol": INSTANCE_PROTOCOL, "label_level": level,
            "primary_protocol": primary_protocol(split_data.captions)}


@contextlib.contextmanager
def evaluation_numerics():
    """The same float arithmetic for every evaluation: TF32 off for matmuls and convolutions (training turns it
    on), so the numbers written by `mwa train` and `mwa eval` come from the same arithmetic."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def frozen_backbone(backbone: str, weights: str | None, tokenizer: str | None, device: torch.device,
                    precision: str | None = None):
    """(model in eval mode on `device`, tokenizer, BackboneInfo, precision) of a backbone as it is (zero-shot)."""
    from mwa_cli.models.presets import build_backbone, require_weights

    model, info = build_backbone(backbone, require_weights(backbone, weights), tokenizer=tokenizer)
    model.to(device)
    model.eval()
    tok = load_tokenizer(tokenizer or getattr(info, "tokenizer_path", None), int(model.config.text_len), model=model)
    return model, tok, info, resolve_precision(precision or "auto", device)


def evaluate_target(target: str | Path | None, *, data_dir: str | Path | None = None, split: str = "test",
                    device: str = "auto", precision: str | None = None, batch_size: int | None = None,
                    tokenizer: str | None = None, backbone: str | None = None, weights: str | None = None,
                    method: str | None = None) -> tuple[dict, dict | None, Path | None]:
    """Evaluate a run folder, an adapter (folder or adapter_config.json), or a bare backbone (`method == "frozen"`).

    Returns (eval.json dict, eval_topk.json dict, the folder the results belong in or None, the per-query
    ranks for eval_ranks.json). A run folder's
    config.json supplies the data dir, and the precision and batch size its training evaluated with (when
    `precision`/`batch_size` are None), so `mwa eval RUN` repeats the run's own evaluation exactly: the model is
    built fresh from the published artefacts, as `mwa train` does for its final evaluation.
    """
    from mwa_cli.data.manifest import load_dataset_info

    dev = resolve_device(device)
    run_cfg: dict = {}
    out_dir: Path | None = None
    if method == "frozen" and backbone:
        model, tok, info, prec = frozen_backbone(backbone, weights, tokenizer, dev, precision)
        if info.random_weights:
            from mwa_cli.models.sources import note_random_weights

            note_random_weights(info.name)
        method_name = "frozen"
        if target is not None and data_dir is None:
            data_dir = target
    else:
        if target is None:
            raise ConfigError("nothing to evaluate", hint="give a run folder or an adapter file")
        run = load_run(target, weights=weights, tokenizer=tokenizer, device=device, precision=precision)
        model, tok, info, run_cfg, prec = run.model, run.tokenizer, run.info, run.config, run.precision
        method_name = run.method
        out_dir = run.folder
        if data_dir is None:
            data_dir = run_cfg.get("data_dir")
        if data_dir is None:
            raise ConfigError("no data dir: this adapter does not come with a run's config.json",
                              hint="pass --data DATA_DIR")
    if batch_size is None:
        batch_size = int(run_cfg.get("eval_batch_size") or 128)
    ds_info = load_dataset_info(Path(data_dir))
    identity = {"method": method_name, "backbone": info.name, "dataset_hash": ds_info.get("dataset_hash"),
                "backbone_weights_sha256": getattr(info, "weights_sha256", None)}
    ranks: dict = {}
    with evaluation_numerics():
        result, top = evaluate_model(model, tok, data_dir, split, device=dev, dtype=amp_dtype(prec),
                                     batch_size=batch_size, identity=identity, ranks_out=ranks)
    result["numerics"] = {"precision": prec, "batch_size": int(batch_size), "device": dev.type,
                          "tf32": False}
    return result, top, out_dir, ranks.get("query_ranks")


def eval_file_name(split: str, run_cfg: dict) -> str:
    """eval.json holds the run's own number (its final split); another split goes to eval_<split>.json."""
    final = run_cfg.get("final_split") or "test"
    return "eval.json" if split == final else f"eval_{split}.json"


def evaluate_path(target: str | Path | None, *, data_dir: str | Path | None = None, split: str = "test",
                  device: str = "auto", precision: str | None = None, batch_size: int | None = None,
                  tokenizer: str | None = None, backbone: str | None = None, weights: str | None = None,
                  method: str | None = None, write: bool = True) -> dict:
    """`mwa eval`: `evaluate_target`, then (when `write` and the target is a folder) eval.json + eval_topk.json
    for the run's final split, or eval_<split>.json for another split (the run's number is never replaced)."""
    from mwa_cli.fileio import atomic_write_json

    result, top, out_dir, ranks = evaluate_target(target, data_dir=data_dir, split=split, device=device,
                                                  precision=precision, batch_size=batch_size,
                                                  tokenizer=tokenizer, backbone=backbone, weights=weights,
                                                  method=method)
    if write and out_dir is not None:
        name = eval_file_name(split, read_run_config(out_dir))
        atomic_write_json(out_dir / name, result)
        if name == "eval.json":  # the run's number: with the per-query ranks its intervals come from
            from mwa_cli.eval.bootstrap import save_ranks

            save_ranks(out_dir, result["split"], ranks)
        if top is not None and name == "eval.json":
            atomic_write_json(out_dir / "eval_topk.json", top)
        result = dict(result, written_to=str(out_dir / name))
    return result
