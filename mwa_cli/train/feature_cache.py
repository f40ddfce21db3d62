"""Feature cache: the frozen layers' output, computed once per training image and caption, reused every epoch.

With adapters only in the top layers (``--option layers=top-K``), nothing below the lowest adapted layer ``k``
trains, so its output for a given input never changes. ``mwa train --feature-cache`` runs the embeddings and
layers ``< k`` once over the train split (eval mode: no drop path), stores the hidden states entering layer
``k`` and trains layers ``>= k`` from them. The price: an image is cached once, so random crops and flips are
off (the whole image is used, as at evaluation).

Storage ``gpu`` (device memory), ``ram`` (host memory, pinned on CUDA) or ``disk`` (a memory-mapped file in the
run folder, removed when the run ends); ``auto`` picks the first that fits (see ``choose_location``).
Sizes: images ``n_images x (1 + patches) x d``, captions ``n_pairs x L x d``, in the compute dtype (bf16 on GPU).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from mwa_cli.errors import ConfigError
from mwa_cli.train.dist.cache_share import CacheShare, fill_rows

GPU_SHARE = 0.3  # auto: on the GPU when the cache needs at most this share of its free memory
RAM_SHARE = 0.5  # auto: in RAM when it needs at most this share of the available host memory


@dataclass
class FeatureCache:
    """Hidden states entering layer ``start`` for every train image (by cache row) and every train pair."""

    start: int
    location: str
    image_slot: Tensor  # [rows in the data cache] -> slot in `images` (-1: not a train image)
    images: Tensor  # [n_train_images, 1 + patches, d]
    captions: Tensor  # [n_pairs, L, d]
    image_rows: Tensor  # [n_pairs] data-cache row of each pair's image
    fill_s: float
    files: tuple[Path, ...] = ()

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.captions.numel() * self.captions.element_size()

    def describe(self) -> dict:
        """Size, place and fill time, for timing.json and the progress messages."""
        return {"start_layer": self.start, "location": self.location, "images": int(self.images.shape[0]),
                "captions": int(self.captions.shape[0]), "gib": self.nbytes / 2**30, "fill_s": self.fill_s}

    def inputs(self, batch: dict, device: torch.device) -> dict:
        """The trainer's inputs for a batch of pair indices (``batch["index"]``, with its ``padding_mask``):
        the cached hidden states, which the trainer takes instead of images and token ids; the captions' states cut
        to the width of ``padding_mask`` (stored at the tokenizer's length; masked padding makes the cut exact).
        Never synchronises the device: on the GPU the lookups run there, from RAM the rows are gathered into pinned
        memory and copied asynchronously."""
        index = batch["index"]
        if self.location == "gpu":
            index = index.to(self.images.device, non_blocking=True)
        slots = self.image_slot[self.image_rows[index]]
        width = batch["padding_mask"].shape[1]  # the batch's bucket length: the rest is padding in every row
        image_hidden, text_hidden = self.images[slots], self.captions[index, :width]
        if device.type == "cuda" and self.location != "gpu":
            image_hidden, text_hidden = image_hidden.pin_memory(), text_hidden.pin_memory()
        return {**batch, "image_hidden": image_hidden.to(device, non_blocking=True),
                "text_hidden": text_hidden.to(device, non_blocking=True)}

    def close(self) -> None:
        """Drop the storage (and the disk files)."""
        self.images = self.captions = torch.empty(0)
        for f in self.files:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()


def cache_bytes(n_images: int, n_pairs: int, tokens: int, text_len: int, dim: int, element_size: int) -> int:
    return (n_images * tokens + n_pairs * text_len) * dim * element_size


def available_ram() -> int:
    """Host memory available now (Linux sysconf; 0 when unknown)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def choose_location(requested: str, nbytes: int, device: torch.device) -> str:
    """``auto``: GPU if it needs ≤ 30 % of the free device memory, RAM if ≤ 50 % of the available host memory,
    else disk. An explicit choice is checked against the same limits and refused with the numbers."""
    gib = nbytes / 2**30
    gpu_free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    ram = available_ram()
    if requested == "auto":
        if device.type == "cuda" and nbytes <= GPU_SHARE * gpu_free:
            return "gpu"
        if nbytes <= RAM_SHARE * ram or ram == 0 and device.type == "cpu":
            return "ram"
        return "disk"
    if requested == "gpu":
        if device.type != "cuda":
            raise ConfigError("--feature-cache gpu needs a CUDA device", hint="use --feature-cache ram or auto")
        if nbytes > 0.9 * gpu_free:
            raise ConfigError(f"the feature cache needs {gib:.1f} GiB, the GPU has {gpu_free / 2**30:.1f} GiB free",
                              hint="use --feature-cache ram, disk or auto")
    if requested == "ram" and ram and nbytes > 0.9 * ram:
        raise ConfigError(f"the feature cache needs {gib:.1f} GiB, the host has {ram / 2**30:.1f} GiB available",
                          hint="use --feature-cache disk or auto")
    return requested


def _storage(shape: tuple[int, ...], dtype: torch.dtype, location: str, device: torch.device,
             path: Path | None) -> Tensor:
    if location == "gpu":
        return torch.empty(shape, dtype=dtype, device=device)
    if location == "ram":
        return torch.empty(shape, dtype=dtype, pin_memory=device.type == "cuda")
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16 if dtype in (torch.bfloat16, torch.float16)
                                    else np.float32, shape=shape)
    return torch.from_numpy(raw).view(dtype)


def fill_feature_cache(model, start: int, image_array: np.ndarray, image_rows: np.ndarray, input_ids: Tensor,
                       padding_mask: Tensor, to_pixels: Callable[[Tensor], Tensor], *, device: torch.device,
                       dtype: torch.dtype | None, location: str = "auto", folder: Path | None = None,
                       batch_size: int = 128, progress: Callable[[int, int], None] | None = None,
                       share: CacheShare | None = None) -> FeatureCache:
    """Run the embeddings and layers ``< start`` of ``model`` (eval mode, no autograd) over the train images
    (``image_array[rows]``, uint8 [S,S,3], made pixels by ``to_pixels`` on the device) and captions.

    ``dtype``: autocast dtype (None: fp32); the cache holds that dtype. ``progress(done, total)`` after each batch.
    ``share``: the ranks of a distributed run fill it together (dist/cache_share.py); every rank gets all of it.
    """
    if start < 1:
        raise ConfigError("the feature cache needs frozen layers below the adapters",
                          hint="adapt only the top layers, e.g. --option layers=top-4")
    t0 = time.monotonic()
    cfg = model.config
    rows = np.unique(image_rows)
    store_dtype = dtype or torch.float32
    tokens, text_len = cfg.num_patches + 1, int(input_ids.shape[1])
    element = torch.empty(0, dtype=store_dtype).element_size()
    nbytes = cache_bytes(len(rows), len(image_rows), tokens, text_len, cfg.embed_dim, element)
    location = choose_location(location, nbytes, device)
    if share is not None:
        location = share.location(location)
    folder, tag = folder or Path("."), share.file_tag() if share is not None else ""
    img_path, cap_path = folder / f"feature_cache_images{tag}.npy", folder / f"feature_cache_captions{tag}.npy"
    images = _storage((len(rows), tokens, cfg.embed_dim), store_dtype, location, device, img_path)
    captions = _storage((len(image_rows), text_len, cfg.embed_dim), store_dtype, location, device, cap_path)
    total = len(rows) + len(image_rows)
    done = 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    def image_chunk(lo: int, hi: int) -> Tensor:
        chunk = torch.from_numpy(np.ascontiguousarray(image_array[rows[lo:hi]])).to(device)
        return model.image_hidden(to_pixels(chunk), start)

    def caption_chunk(lo: int, hi: int) -> Tensor:
        return model.text_hidden(input_ids[lo:hi].to(device), padding_mask[lo:hi].to(device), start)

    fill = share.fill if share is not None else fill_rows
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast:
            fill(images, len(rows), batch_size, image_chunk, count)
            fill(captions, len(image_rows), batch_size, caption_chunk, count)
    finally:
        model.train(was_training)
    slot = torch.full((int(max(rows.max(initial=0), image_rows.max(initial=0))) + 1,), -1, dtype=torch.long)
    slot[torch.from_numpy(rows)] = torch.arange(len(rows))
    pair_rows = torch.from_numpy(np.asarray(image_rows, dtype=np.int64))
    if location == "gpu":  # look up on the device: no host round trip per batch
        slot, pair_rows = slot.to(device), pair_rows.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return FeatureCache(start=start, location=location, image_slot=slot, images=images, captions=captions,
                        image_rows=pair_rows, fill_s=time.monotonic() - t0,
                        files=(img_path, cap_path) if location == "disk" else ())
