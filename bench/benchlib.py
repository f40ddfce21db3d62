"""Helpers the benches (and the end-to-end tests) share: the machine's CPU name, a seeded adapter run folder to
measure on, a trainer's step times, the JSON result written and shown, the processes a run left behind. Standard
library at import time: `python bench/x.py` needs only the repository."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from queue import Queue
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from mwa_cli.train.trainer import Trainer


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def save_run(path: Path, backbone: str, method: str, *, perturb: float = 0.0,
             seed: int | None = None) -> Path:
    """An adapter folder of `method` on `backbone` (seed 0); `perturb` > 0 moves the trainables off their
    initial values (an untrained adapter is often the identity, which would hide the adapter's cost), drawn with
    `seed` when given (distinct adapters on one backbone)."""
    import torch

    from mwa_cli.adapters.io import save_adapter
    from mwa_cli.adapters.registry import apply_method
    from mwa_cli.models.presets import build_backbone

    torch.manual_seed(0)
    model, info = build_backbone(backbone)
    applied = apply_method(model, method)
    if perturb:
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for _, p in applied.trainable_named_parameters():
                p.add_(torch.randn(p.shape, generator=g) * perturb)
    save_adapter(path, model, applied, info)
    return path


def time_steps(trainer: Trainer, batch: dict | Callable[[], dict], n: int = 15, warmup: int = 3,
               window: int = 1) -> list[float]:
    """`warmup` untimed steps of `trainer`, then `n` timings of `window` back-to-back steps each (the device
    synchronised at the ends of each window only, as in `mwa train`), as seconds per step. `batch` may be a
    callable that makes each step's batch (its time counts)."""
    make = batch if callable(batch) else (lambda: batch)
    for _ in range(warmup):
        trainer.step(make())
    trainer.synchronize()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        for _ in range(window):
            trainer.step(make())
        trainer.synchronize()
        times.append((time.perf_counter() - t0) / window)
    return times


def gpu_queue(spec: str) -> "Queue[str] | None":
    """`--gpus 0,1`: a queue of GPU ids that parallel jobs take one each (so no two share a device); None for ''."""
    if not spec:
        return None
    gpus: Queue[str] = Queue()
    for g in spec.split(","):
        gpus.put(g)
    return gpus


def publish(result: dict, out: Path) -> None:
    """Write the bench's result to `out` (JSON) and print it."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    print(text)


def leftover_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process but this one whose command line mentions `marker` (Linux /proc;
    zombies, already dead, are not counted). A run's DataLoader workers are forked, so they carry their trainer's
    command line: a run folder as `marker` finds its trainer, ranks and workers."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            found.append((int(pid), cmd))
    return found
