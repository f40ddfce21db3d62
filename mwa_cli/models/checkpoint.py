"""Loading backbone weights: official BEiT-3 .pth files or safetensors, strictly checked, never unpickling code."""

from __future__ import annotations

import os
import pickle
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from mwa_cli.errors import CheckpointError
from mwa_cli.fileio import atomic_write, sha256_file
from mwa_cli.safe_open import not_regular

POS_KEY = "beit3.encoder.embed_positions.A.weight"
EXTRA_POS_ROWS = 3  # two unused fairseq rows + the cls token
DEFAULT_CACHE = Path(os.environ.get("MWA_CACHE", Path.home() / ".cache" / "mwa"))


def is_url(value: str) -> bool:
    return urllib.parse.urlparse(str(value)).scheme in ("http", "https")


def download(url: str, cache_dir: Path = DEFAULT_CACHE, progress=None) -> Path:
    """Download ``url`` once into ``cache_dir`` (only ever called when the user passes a URL)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / Path(urllib.parse.urlparse(url).path).name
    if target.is_file():
        return target

    def fetch(tmp: str) -> None:
        with urllib.request.urlopen(url) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            task = progress.add_task(f"download {target.name}", total=total or None) if progress else None
            while block := resp.read(1 << 20):
                out.write(block)
                if progress:
                    progress.advance(task, len(block))

    try:
        atomic_write(target, fetch)
    except OSError as exc:
        raise CheckpointError(f"could not download {url}: {exc}",
                              hint="download the file by hand and pass its local path to --weights") from None
    return target


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a .pth/.pt/.bin (official layout: under ``model`` or ``module``) or .safetensors file."""
    path = Path(path)
    why = not_regular(path)  # a FIFO or device would block or never end
    if why is not None:
        raise CheckpointError(f"weights file not found: {path}" if not path.exists() else f"weights file {path}: {why}",
                              hint="check the path; BEiT-3's official weights and tokenizer: see `mwa doctor` "
                                   "or the README (On your own photos)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file is empty: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {path} as safetensors: {exc}",
                                  hint="the file may be truncated; download it again") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it contains Python objects other than tensors ({str(exc).splitlines()[0]})",
            hint="mwa only loads plain weights (weights_only=True); convert the file to safetensors in a trusted "
                 "environment",
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0]}",
                              hint="the file may be truncated or not a PyTorch checkpoint; download it again") from None
    if isinstance(obj, dict):
        for key in ("model", "module", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return obj


def interpolate_positions(table: Tensor, num_patches: int) -> Tensor:
    """Bicubically resize the vision position table to ``num_patches`` (e.g. 224 <-> 384 px), as BEiT-3 does."""
    extra, grid = table[:EXTRA_POS_ROWS], table[EXTRA_POS_ROWS:]
    old, new = int(round(grid.shape[0] ** 0.5)), int(round(num_patches**0.5))
    if old * old != grid.shape[0] or new * new != num_patches:
        raise CheckpointError(f"position table of {table.shape[0]} rows is not a square patch grid")
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new * new, -1).to(table.dtype)
    return torch.cat([extra, grid], dim=0)


def _first(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_backbone_weights(model: nn.Module, path: str | Path) -> str:
    """Load weights into ``model`` with a strict key and shape check; returns the file's sha256."""
    state = read_state_dict(path)
    expected = model.state_dict()
    if POS_KEY in state and POS_KEY in expected and state[POS_KEY].shape != expected[POS_KEY].shape:
        state[POS_KEY] = interpolate_positions(state[POS_KEY], expected[POS_KEY].shape[0] - EXTRA_POS_ROWS)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
        raise CheckpointError(f"{path} does not match the backbone: " + "; ".join(parts),
                              hint="check --backbone (base/large, image size) matches the checkpoint")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{path} has tensors of the wrong shape: {_first(wrong, 3)}",
                              hint="check --backbone (base/large, vocabulary size) matches the checkpoint")
    model.load_state_dict(state, strict=True)
    return sha256_file(path)

