"""Batched embedding of images (from the uint8 cache) and captions (token ids) under inference mode; each batch
of captions is cut to its bucket length where the padding's length cannot change an embedding
(mwa_cli/models/text_pad.py)."""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from mwa_cli.models.preprocess import to_pixels
from mwa_cli.models.text_pad import padding_is_free, trim_padding


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def embed_images(model, images: np.ndarray, rows: Sequence[int] | np.ndarray, *, image_size: int,
                 device: torch.device, batch_size: int = 128, dtype: torch.dtype | None = None,
                 progress=None) -> torch.Tensor:
    """Embeddings [N, d] (float32, on `device`) of cache rows `rows` of `images` (uint8 [*, S, S, 3])."""
    rows = np.asarray(rows, dtype=np.int64)
    out = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            order = np.argsort(chunk, kind="stable")
            u8 = np.empty((len(chunk),) + tuple(images.shape[1:]), dtype=np.uint8)
            u8[order] = images[chunk[order]]
            x = torch.from_numpy(u8)
            if device.type == "cuda":
                x = x.pin_memory().to(device, non_blocking=True)
            px = to_pixels(x, image_size)
            with autocast_context(device, dtype):
                emb = model.encode_image(px)
            out.append(emb.float())
            if progress is not None:
                progress(len(chunk))
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros((0, 1), device=device)
    return torch.cat(out)


@torch.inference_mode()
def embed_texts(model, input_ids: torch.Tensor, padding_mask: torch.Tensor, *, device: torch.device,
                batch_size: int = 256, dtype: torch.dtype | None = None, progress=None) -> torch.Tensor:
    """Embeddings [N, d] (float32, on `device`) of tokenised captions."""
    out = []
    trim = padding_is_free(model)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, input_ids.shape[0], batch_size):
            mask, ids = padding_mask[i:i + batch_size], input_ids[i:i + batch_size]
            if trim:
                mask, ids = trim_padding(mask, ids)
            ids = ids.to(device, non_blocking=True)
            mask = mask.to(device, non_blocking=True)
            with autocast_context(device, dtype):
                emb = model.encode_text(ids, mask)
            out.append(emb.float())
            if progress is not None:
                progress(ids.shape[0])
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros((0, 1), device=device)
    return torch.cat(out)
