"""Training input pipeline over the prepared image cache (no JPEG decoding while training).

Design (see docs/decisions.md):
* One item of `TrainBatches` is a whole *effective batch*, addressed by the global optimizer step. The pair order
  of epoch e is `randperm(n, seed, e)` (drop_last), so step s always holds the same pairs: a resume at step s
  continues the exact same data order, whatever the number of workers.
* Augmentation parameters (random-resized-crop box, scale 0.5–1, ratio 3/4–4/3; horizontal flip) are drawn from a
  generator seeded by (seed, step), never from the global RNG, so they are reproducible too.
* Workers only gather uint8 rows from the memory-mapped cache (one fancy-index per batch) plus the pre-tokenised
  captions; the crop/flip/resize/normalise runs batched on the training device (`augment_batch`), so only uint8
  crosses the PCIe bus (pinned) and the CPU never bottlenecks the GPU.
* Captions are cut to the longest of their batch, rounded up to a bucket length (`trim_text`, for backbones whose
  text encoder masks its padding: mwa_cli/models/text_pad.py), in the workers too.
* Horizontal flip is disabled per sample when its caption mentions left/right (EN) or 左/右 (JA), or a
  rotation sense (clockwise, 時計回り): flipping would contradict the caption.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mwa_cli.errors import DataError
from mwa_cli.models.preprocess import MEAN, STD
from mwa_cli.models.text_pad import second_width, trim_padding

LOADER_TIMEOUT_S = 120  # a worker that delivers no batch for this long is reported, not waited on forever

_FLIP_WORDS = re.compile(
    r"\b(left|right)|(counter|anti)[- ]?clockwise|\bclockwise|[左右]|時計回り|反時計", re.IGNORECASE
)


def mentions_left_right(text: str) -> bool:
    """True when a caption's meaning changes under a horizontal flip (left/right, 左/右, clockwise...)."""
    return bool(_FLIP_WORDS.search(text or ""))


def flip_allowed_mask(captions: list[str], mode: str = "auto") -> np.ndarray:
    """Per pair: may this sample be flipped? mode auto (caption check), on (always), off (never)."""
    if mode == "off":
        return np.zeros(len(captions), dtype=bool)
    if mode == "on":
        return np.ones(len(captions), dtype=bool)
    return np.array([not mentions_left_right(c) for c in captions], dtype=bool)


def cache_path(data_dir: str | Path, size: int) -> Path:
    return Path(data_dir) / "cache" / f"images_{size}.u8"


def open_cache_array(data_dir: str | Path, size: int, count: int) -> np.ndarray:
    """Read-only memmap of the image cache `[N, S, S, 3]` uint8 (docs/formats.md), after checking its size."""
    check_cache_size(data_dir, size, count)
    return np.memmap(cache_path(data_dir, size), dtype=np.uint8, mode="r", shape=(count, size, size, 3))


def check_cache_size(data_dir: str | Path, size: int, count: int) -> None:
    """A memory-mapped file shorter than its shape kills the reader with SIGBUS ("Bus error", no message) on
    the first row past its end: refuse it with a message instead, before mapping and before each batch."""
    path = cache_path(data_dir, size)
    want = int(count) * int(size) * int(size) * 3
    try:
        have = os.stat(path).st_size
    except OSError:
        have = -1
    if have < want:
        raise DataError(f"the image cache {path} has {max(have, 0)} bytes, {want} expected: it was truncated or "
                        "replaced while this command ran",
                        hint="re-run `mwa prepare` on the photos folder (with the same --out), then run the command "
                             "again (`mwa train --resume RUN` continues a run from its last checkpoint)")


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + 12345) % (2**63 - 1))
    return torch.randperm(n, generator=g)


def crop_boxes(batch: int, gen: torch.Generator, scale_min: float = 0.5, scale_max: float = 1.0,
               ratio=(3 / 4, 4 / 3), tries: int = 10) -> torch.Tensor:
    """torchvision RandomResizedCrop parameters, vectorised, as fractions of a square image: [B, 4] (x0, y0, w, h)."""
    area = torch.empty(batch, tries).uniform_(scale_min, scale_max, generator=gen)
    logr = torch.empty(batch, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(logr)
    w = torch.sqrt(area * r)
    h = torch.sqrt(area / r)
    ok = (w <= 1.0) & (h <= 1.0)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((batch,), -1, dtype=torch.long))
    ux = torch.rand(batch, generator=gen)
    uy = torch.rand(batch, generator=gen)
    idx = first.clamp(min=0)
    bw = torch.where(first >= 0, w.gather(1, idx[:, None])[:, 0], torch.ones(batch))
    bh = torch.where(first >= 0, h.gather(1, idx[:, None])[:, 0], torch.ones(batch))
    x0 = ux * (1.0 - bw)
    y0 = uy * (1.0 - bh)
    return torch.stack([x0, y0, bw, bh], 1)


def _worker_init(_worker_id: int) -> None:
    """Ctrl-C (and torchrun's or systemd's SIGTERM) go to the whole process group: workers ignore them, the trainer
    stops at a step boundary and shuts them down itself (`close_loader`). Linux: a worker dies with its trainer
    process, even one killed with SIGKILL, so an ignored SIGTERM never leaves one behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()


def die_with_parent() -> None:
    """Ask Linux to send this process SIGKILL when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - best effort
        pass


@dataclass
class PairTable:
    """The train split as arrays: cache row of each pair's image, token ids, padding mask, flip permission."""

    image_rows: np.ndarray  # [P] int64
    input_ids: torch.Tensor  # [P, L] int64
    padding_mask: torch.Tensor  # [P, L]
    flip_ok: np.ndarray  # [P] bool
    groups: np.ndarray | None = None  # [P] int64 positive-group ids (train/positives.py); None: one per pair

    def group_batch(self, idx: torch.Tensor) -> dict:
        """`{"group": ids}` of the pairs `idx` for the batch dict, or {} when every pair is its own group."""
        if self.groups is None:
            return {}
        return {"group": torch.from_numpy(self.groups[idx.numpy()])}

    def __len__(self) -> int:
        return int(self.image_rows.shape[0])


class TrainBatches(torch.utils.data.Dataset):
    """Map-style dataset whose key is the global optimizer step; returns one effective batch."""

    def __init__(self, pairs: PairTable, data_dir: str | Path, cache_size: int, cache_count: int,
                 batch_size: int, seed: int, crop_scale_min: float = 0.5, augment: bool = True,
                 rank: int = 0, world_size: int = 1, load_images: bool = True, trim_text: bool = False):
        self.pairs = pairs
        self.trim_text = trim_text  # True: captions cut to the batch's bucket length (models/text_pad.py)
        # distributed: this rank loads only rows rank::world_size of each global batch (augmentation drawn for the
        # whole global batch first, so a sample is augmented the same way whatever the number of devices)
        self.rank, self.world_size = int(rank), int(world_size)
        self.data_dir = str(data_dir)
        self.cache_size = int(cache_size)
        self.cache_count = int(cache_count)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.crop_scale_min = float(crop_scale_min)
        self.augment = augment
        self.load_images = load_images  # False: batches carry pair indices only (a feature cache has the images)
        self._array = None  # opened lazily in each worker (a memmap must not be pickled)
        self._orders: dict[int, torch.Tensor] = {}

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.pairs) // self.batch_size)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of global step `step`."""
        return divmod(int(step), self.steps_per_epoch)

    def indices_for(self, step: int) -> torch.Tensor:
        """Pair indices of global step `step`: a tensor of its own, never a view of the cached epoch order.

        A DataLoader worker hands a returned tensor to its queue's feeder thread, which moves the tensor's whole
        storage into shared memory and frees the old block while this thread goes on; a view of the cached order
        (and numpy arrays over it) would then read freed memory in the next batch."""
        epoch, j = self.position(step)
        order = self._orders.get(epoch)
        if order is None:
            self._orders = {epoch: epoch_order(len(self.pairs), self.seed, epoch)}
            order = self._orders[epoch]
        return order[j * self.batch_size:(j + 1) * self.batch_size].clone()

    def captions(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(padding_mask, input_ids) of the pairs `idx`, cut to their bucket length when `trim_text`."""
        mask, ids = self.pairs.padding_mask[idx], self.pairs.input_ids[idx]
        return trim_padding(mask, ids) if self.trim_text else (mask, ids)

    def other_widths(self, batch: dict) -> list[int]:
        """Text widths other batches take than `batch`'s (at most one: compiling at two makes the length dynamic,
        `Trainer.warm_compile`); none when captions keep the tokenizer's length."""
        if not self.trim_text:
            return []
        mask = self.pairs.padding_mask
        other = second_width(batch["padding_mask"].shape[1], (mask == 0).sum(1), mask.shape[1])
        return [other] if other else []

    def __len__(self) -> int:  # nominal; the sampler is infinite
        return 2**62

    def __getitem__(self, step: int) -> dict:
        idx = self.indices_for(step)
        b_global = len(idx)
        shard = slice(self.rank, None, self.world_size)
        idx = idx[shard].contiguous() if self.world_size > 1 else idx
        mask, ids = self.captions(idx)
        if not self.load_images:
            return {"step": int(step), "padding_mask": mask, "index": idx, **self.pairs.group_batch(idx)}
        if self._array is None:
            self._array = open_cache_array(self.data_dir, self.cache_size, self.cache_count)
        else:
            check_cache_size(self.data_dir, self.cache_size, self.cache_count)
        idx_np = idx.numpy()
        rows = self.pairs.image_rows[idx_np]
        # fancy-index with sorted rows (sequential reads), then put back in batch order
        order = np.argsort(rows, kind="stable")
        gathered = np.empty((len(rows), self.cache_size, self.cache_size, 3), dtype=np.uint8)
        gathered[order] = self._array[rows[order]]
        gen = torch.Generator()
        gen.manual_seed((self.seed * 2_000_003 + int(step) * 104_729 + 7) % (2**63 - 1))
        b = len(rows)
        if self.augment:
            boxes = crop_boxes(b_global, gen, self.crop_scale_min)[shard]
            flip = (torch.rand(b_global, generator=gen)[shard] < 0.5) & torch.from_numpy(self.pairs.flip_ok[idx_np])
        else:
            boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(b, 1)
            flip = torch.zeros(b, dtype=torch.bool)
        return {
            "step": int(step),
            "images": torch.from_numpy(gathered),
            "input_ids": ids,
            "padding_mask": mask,
            "boxes": boxes,
            "flip": flip,
            "index": idx,
            **self.pairs.group_batch(idx),
        }


class _StepSampler(torch.utils.data.Sampler):
    def __init__(self, start: int, stop: int | None = None):
        self.start, self.stop = int(start), stop

    def __iter__(self):
        s = self.start
        while self.stop is None or s < self.stop:
            yield s
            s += 1


def make_loader(dataset: TrainBatches, start_step: int, *, workers: int, pin_memory: bool,
                stop_step: int | None = None) -> torch.utils.data.DataLoader:
    """DataLoader over steps [start_step, stop_step) (infinite when stop_step is None).

    A private generator is passed so creating the iterator never consumes the global torch RNG (resume exactness).
    """
    kwargs = {}
    if workers > 0:
        kwargs.update(worker_init_fn=_worker_init, prefetch_factor=4, persistent_workers=False,
                      timeout=LOADER_TIMEOUT_S)
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=_StepSampler(start_step, stop_step), num_workers=workers,
        pin_memory=pin_memory, generator=torch.Generator().manual_seed(0), **kwargs,
    )


def augment_batch(images_u8: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, out_size: int) -> torch.Tensor:
    """Batched random-resized-crop + flip + normalise on the images' device (bilinear sampling)."""
    b = images_u8.shape[0]
    x = images_u8.permute(0, 3, 1, 2).float()
    # non_blocking: a blocking copy would make the host wait for the previous step's kernels (a hidden sync)
    boxes = boxes.to(device=x.device, non_blocking=True).float()
    flip = flip.to(device=x.device, non_blocking=True)
    x0, y0, w, h = boxes.unbind(1)
    sx = torch.where(flip, -w, w)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = 2 * (x0 + w / 2) - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * (y0 + h / 2) - 1
    grid = F.affine_grid(theta, [b, 3, out_size, out_size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)


def close_loader(it) -> None:
    """End a loader iterator's worker processes now (not at garbage collection, which an exception's traceback
    can postpone until interpreter exit, when the workers are no longer told to stop)."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
