"""Run an export directory with onnxruntime on the CPU: the same interface as `mwa_cli.search.model.SearchModel`
(encode texts, photos and cached rows; identity), without building any of mwa's PyTorch models."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mwa_cli.errors import CheckpointError, ConfigError
from mwa_cli.export.manifest import MANIFEST_FILE, read_manifest


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    if not path.is_file():
        raise CheckpointError(f"{path} is missing", hint="export the run again")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
        raise CheckpointError(f"onnxruntime cannot load {path}: {exc}", hint="export the run again") from None


def u8_to_pixels(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [B, S, S, 3] (already at the model's size) → float32 [B, 3, S, S], mean = std = 0.5."""
    x = np.ascontiguousarray(np.asarray(images_u8).transpose(0, 3, 1, 2), dtype=np.float32)
    return x * np.float32(1 / 127.5) - np.float32(1.0)


@dataclass
class ExportedModel:
    """An exported model: two onnxruntime sessions, the tokenizer and the manifest."""

    path: Path
    manifest: dict[str, Any]
    image_session: Any
    text_session: Any | None
    tokenizer: Any | None

    # what SearchModel holds, so index and search treat both alike
    method: str = ""
    device: str = "cpu (onnxruntime)"

    @classmethod
    def load(cls, export_dir: str | Path, *, manifest: dict[str, Any] | None = None, need_tokenizer: bool = True,
             threads: int | None = None) -> "ExportedModel":
        folder = Path(export_dir).expanduser().resolve()
        if manifest is None:
            manifest = read_manifest(folder)
        threads = threads or default_threads()
        from mwa_cli.integrity import recorded, verify

        verify(folder, manifest, recorded(manifest), side_name=MANIFEST_FILE,
               remedy="export the run again: mwa export RUN_DIR --format onnx --overwrite")
        img = _session(folder / manifest["image"]["file"], threads)
        txt = _session(folder / manifest["text"]["file"], threads) if need_tokenizer else None
        tok = _tokenizer(folder, manifest) if need_tokenizer else None
        if manifest.get("random_weights"):
            from mwa_cli.models.sources import note_random_weights

            note_random_weights(folder)
        return cls(path=folder, manifest=manifest, image_session=img, text_session=txt, tokenizer=tok,
                   method=str(manifest.get("method") or ""))

    # ------------------------------------------------------------------ SearchModel's interface
    @property
    def identity(self) -> dict[str, Any]:
        return dict(self.manifest["identity"])

    @property
    def run_dir(self) -> Path:
        return Path(self.manifest.get("run_dir") or self.path)

    @property
    def weights(self) -> str | None:
        return None

    @property
    def tokenizer_path(self) -> str | None:
        return None

    @property
    def image_size(self) -> int:
        return int(self.manifest["image"]["size"])

    def encode_pixels(self, images_u8: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Embeddings float32 [B, d] of uint8 [B, S, S, 3] images (already square-resized)."""
        return self.embed_rows(images_u8, np.arange(len(images_u8)), batch_size=batch_size)

    def embed_rows(self, images: np.ndarray, rows: Sequence[int], *, batch_size: int = 64,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = []
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            px = u8_to_pixels(images[np.sort(chunk)][np.argsort(np.argsort(chunk))])
            out.append(self.image_session.run(None, {"pixel_values": px})[0])
            if progress is not None:
                progress(len(chunk))
        return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)

    def encode_text_ids(self, ids: np.ndarray, mask: np.ndarray, batch_size: int = 256) -> np.ndarray:
        if self.text_session is None:
            raise ConfigError("this exported model was loaded without its text encoder")
        # a model that ignores padding (SigLIP) has no padding_mask input: feed what the graph declares
        names = {i.name for i in self.text_session.get_inputs()}
        out = []
        for i in range(0, len(ids), batch_size):
            feed = {"input_ids": ids[i:i + batch_size].astype(np.int64),
                    "padding_mask": mask[i:i + batch_size].astype(np.int64)}
            out.append(self.text_session.run(None, {k: v for k, v in feed.items() if k in names})[0])
        return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if self.tokenizer is None:
            raise ConfigError("this exported model was loaded without its tokenizer")
        ids, mask = self.tokenizer.encode_batch(texts)
        return self.encode_text_ids(ids.numpy(), mask.numpy())


def _tokenizer(folder: Path, manifest: dict[str, Any]):
    text = manifest.get("text") or {}
    tok = text.get("tokenizer")
    if tok is None:  # during export's own check: the caller passes token ids
        return None
    text_len = int(text["text_len"])
    if tok.get("kind") == "hf":
        from mwa_cli.models.hf import HFTokenizer

        return HFTokenizer.from_pretrained(str(folder / tok["path"]), max_len=text_len)
    from mwa_cli.models.tokenizer import Beit3Tokenizer

    return Beit3Tokenizer.from_file(folder / tok["path"], max_len=text_len,
                                    added_tokens=tok.get("added_tokens") or None)


def default_threads() -> int | None:
    """onnxruntime's intra-op threads: OMP_NUM_THREADS when set (as torch honours it), else its own default."""
    value = os.environ.get("OMP_NUM_THREADS")
    return int(value) if value and value.isdigit() and int(value) > 0 else None
