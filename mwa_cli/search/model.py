"""The model that embeds queries and photos for an index: a run's adapted PyTorch model (`SearchModel`) or an
export folder run by onnxruntime (`mwa_cli.export.runtime.ExportedModel`, the same interface), the identity that
ties an index to it, and the check that refuses an index made with another adapter or backbone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mwa_cli.errors import CheckpointError, ConfigError
from mwa_cli.export.manifest import is_export_dir, read_manifest
from mwa_cli.fileio import sha256_file


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
    if is_export_dir(path):
        return dict(read_manifest(path)["identity"])
    return adapter_identity(path)


def load_search_model(run_dir: str | Path, *, weights: str | None = None, tokenizer: str | None = None,
                      device: str = "auto", need_tokenizer: bool = True) -> Any:
    """Rebuild the run's adapted model (as `mwa eval` does: same seed, weights and tokenizer as training), or,
    for a folder written by `mwa export`, open its ONNX graphs in onnxruntime (no PyTorch model is built)."""
    from mwa_cli.export.runtime import ExportedModel

    if is_export_dir(run_dir):
        if weights or tokenizer:
            raise ConfigError("--weights and --tokenizer do not apply to an exported model (it holds both)")
        return ExportedModel.load(run_dir, need_tokenizer=need_tokenizer)
    from mwa_cli.runs import load_run

    run = load_run(run_dir, weights=weights, tokenizer=tokenizer, device=device, need_tokenizer=need_tokenizer)
    return SearchModel(model=run.model, tokenizer=run.tokenizer, info=run.info, method=run.method,
                       run_dir=run.folder, identity=adapter_identity(run.folder), device=run.device,
                       weights=run.weights, tokenizer_path=run.tokenizer_path)


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
    if adapter is not None and model is not None:
        raise ConfigError("give --adapter or --model, not both")
    path = Path(adapter or model or meta.get("model") or meta.get("adapter") or "")
    if model is None and adapter is None and meta.get("model") and not Path(meta["model"]).exists() \
            and meta.get("adapter") and Path(meta["adapter"]).exists():
        path = Path(meta["adapter"])  # the export that built it was moved: its run (same identity) answers
    check_identity(meta.get("identity") or {}, model_identity(path), Path(index_dir),
                   meta.get("model") or meta.get("adapter"))
    return ModelSource(path=path, exported=is_export_dir(path), meta=meta)
