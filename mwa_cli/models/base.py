"""Value types shared by every backbone builder (presets, hf, blip2): they import this module, never each other's
callers, so `presets` can dispatch to the builders without an import cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BackboneInfo:
    """What an artefact must record to re-attach to the same backbone."""

    name: str
    config: dict[str, Any]
    weights: str | None = None
    weights_sha256: str | None = None
    tokenizer_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    random_weights: bool = False  # built without pretrained weights on purpose (`--weights none`)
    build_s: float = 0.0  # seconds the build took (weights read and checked included): the budget's rebuild cost
