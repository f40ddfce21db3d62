"""Helpers the benches share: the machine's CPU name, a seeded adapter run folder to measure on, the JSON
result written and shown."""

from __future__ import annotations

import json
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def save_run(path: Path, backbone: str, method: str, *, perturb: float = 0.0) -> Path:
    """An adapter folder of `method` on `backbone` (seed 0); `perturb` > 0 moves the trainables off their
    initial values (an untrained adapter is often the identity, which would hide the adapter's cost)."""
    import torch

    from mwa_cli.adapters.io import save_adapter
    from mwa_cli.adapters.registry import apply_method
    from mwa_cli.models.presets import build_backbone

    torch.manual_seed(0)
    model, info = build_backbone(backbone)
    applied = apply_method(model, method)
    if perturb:
        with torch.no_grad():
            for _, p in applied.trainable_named_parameters():
                p.add_(torch.randn(p.shape) * perturb)
    save_adapter(path, model, applied, info)
    return path


def publish(result: dict, out: Path) -> None:
    """Write the bench's result to `out` (JSON) and print it."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    print(text)
