"""Resumable checkpoints, written atomically: `checkpoint/last/` is always a complete checkpoint.

Writing (`mwa_cli.fileio.atomic_dir`): everything goes to `checkpoint/.tmp-<pid>-<n>/` (files fsync'ed), then
`last` is renamed to `last.old`, the temp folder is renamed to `last`, and `last.old` is removed. A SIGKILL at any
moment leaves either `last` (complete) or, in the instant between the two renames, only `last.old` (complete):
`find_checkpoint` falls back to it. Half-written temp folders are ignored and cleaned up by the next save.

Contents: `state.pt` (torch.save, loaded with weights_only=True): trainable tensors by name, optimizer,
schedule, GradScaler, step, RNG states (python, numpy, torch CPU, CUDA), timing counters, micro-batch; and
`meta.json` (step, epoch, time, for people and tools; `files`: state.pt's sha256, checked before it is loaded).
A damaged checkpoint is never resumed: `resume_checkpoint` falls back to `last.old` when it is there and sound,
else stops with a message naming the file.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mwa_cli import fileio, integrity
from mwa_cli.errors import CheckpointError, IntegrityError

FORMAT_VERSION = 1
STATE, META = "state.pt", "meta.json"


def rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # a different GPU count: best effort
            pass


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    missing = sorted(wanted - set(tensors))
    extra = sorted(set(tensors) - wanted)
    if missing or extra:
        raise CheckpointError(
            f"checkpoint does not match this model's trainable parameters (missing {missing[:3]}, "
            f"unexpected {extra[:3]})",
            hint="resume with the same method, backbone and options as the interrupted run")
    with torch.no_grad():
        for name, tensor in tensors.items():
            p = params[name]
            if p.shape != tensor.shape:
                raise CheckpointError(f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, "
                                      f"the model expects {tuple(p.shape)}")
            p.copy_(tensor.to(p.device, p.dtype))


def save_checkpoint(ckpt_root: Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Atomically replace `ckpt_root/last` with a checkpoint of `state` (see module docstring)."""
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_root.glob(f"{fileio.TEMP_DIR_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    payload = dict(state)
    payload["format_version"] = FORMAT_VERSION

    def fill(tmp: Path) -> None:
        with fileio.synced_file(tmp / STATE) as f:
            hashing = integrity.HashingWriter(f)
            try:
                torch.save(payload, hashing)
            except RuntimeError:
                if hashing.error is not None:  # the disk's own error (full disk), not torch's rewording of it
                    raise hashing.error from None
                raise
        stamped = dict(meta, format_version=FORMAT_VERSION, saved=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       **{integrity.FILES_KEY: {STATE: hashing.hexdigest()}})
        with fileio.synced_file(tmp / META, "w") as f:
            json.dump(stamped, f, indent=2, ensure_ascii=False)

    return fileio.atomic_dir(ckpt_root / "last", fill)


def find_checkpoint(run_dir: Path) -> Path | None:
    """`checkpoint/last` of a run, or `last.old` when a kill struck between the two renames; None if none."""
    root = Path(run_dir) / "checkpoint"
    for name in ("last", "last.old"):
        cand = root / name
        if (cand / "state.pt").is_file() and (cand / "meta.json").is_file():
            return cand
    return None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state, after checking state.pt against the sha256 in its meta.json."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"checkpoint {path / META} is unreadable ({exc})", hint=_DAMAGED_HINT) from None
    integrity.verify(path, meta, [STATE], side_name=str(path / META), remedy=_DAMAGED_HINT)
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise IntegrityError(f"cannot read checkpoint {path / STATE}: {exc}", hint=_DAMAGED_HINT) from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        found = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} has format {found!r}, this mwa reads {FORMAT_VERSION}")
    return state


_DAMAGED_HINT = ("this checkpoint cannot be resumed and no earlier one is kept: restore the run folder from a "
                 "backup, or start the run again under another --name")


def resume_checkpoint(run_dir: Path, warn=None) -> tuple[Path, dict[str, Any]] | None:
    """The newest sound checkpoint of a run and its state: `last`, or `last.old` when `last` is damaged (`warn`
    is told which file was skipped). None without a checkpoint; IntegrityError when none is sound."""
    root = Path(run_dir) / "checkpoint"
    candidates = [root / n for n in ("last", "last.old") if (root / n / STATE).is_file() and (root / n / META).is_file()]
    if not candidates:
        return None
    first_error: IntegrityError | None = None
    for cand in candidates:
        try:
            state = load_checkpoint(cand)
        except IntegrityError as exc:
            first_error = first_error or exc
            continue
        if first_error is not None and warn is not None:
            warn(f"{first_error.message}; resuming from the previous checkpoint {cand} instead")
        return cand, state
    assert first_error is not None
    raise first_error


def settle(run_dir: Path, used: Path) -> None:
    """After a resume from `used`, under the run's lock: `used` becomes `checkpoint/last` and the other copy is
    removed (a kill between a save's renames left `last.old`, alone or beside `last`), so a run that ends without
    another save has the same folder as an uninterrupted one."""
    root = Path(run_dir) / "checkpoint"
    last, old = root / "last", root / "last.old"
    if Path(used) == old:
        if last.exists():
            shutil.rmtree(last)  # damaged, or the same step as `used`
        os.replace(old, last)
        fileio.fsync_dir(root)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)
