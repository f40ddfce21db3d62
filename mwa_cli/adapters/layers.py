"""Which encoder layers a method adapts: ``all``, ``top-K``, or explicit indices."""

from __future__ import annotations

from typing import Sequence

from mwa_cli.errors import ConfigError


def select_layers(spec: str | Sequence[int] | None, depth: int) -> list[int]:
    """Resolve a layer selection against a model of ``depth`` layers (sorted, unique, in range)."""
    if spec is None or spec == "all":
        return list(range(depth))
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text.startswith("top-"):
            try:
                k = int(text[4:])
            except ValueError:
                raise ConfigError(f"bad layer selection {spec!r}", hint="use all, top-K or indices like 0,5,11") from None
            if not 1 <= k <= depth:
                raise ConfigError(f"top-{k} is out of range for a {depth}-layer backbone")
            return list(range(depth - k, depth))
        try:
            indices = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"bad layer selection {spec!r}", hint="use all, top-K or indices like 0,5,11") from None
    else:
        indices = [int(i) for i in spec]
    bad = [i for i in indices if not 0 <= i < depth]
    if bad or not indices:
        raise ConfigError(f"layer indices {bad or indices} are out of range for a {depth}-layer backbone")
    return sorted(set(indices))
