"""Which encoder layers a method adapts: ``all``, ``top-K``, or explicit indices."""

from __future__ import annotations

from typing import Any, Sequence

from mwa_cli.errors import ConfigError

_HINT = "use all, top-K or indices like 0,5,11"


def _parse(spec: str | Sequence[int] | None) -> tuple[str, int | list[int]]:
    """``("all", 0)``, ``("top", K)`` or ``("indices", [...])``; a spec that cannot be read is refused."""
    if spec is None or spec == "all":
        return "all", 0
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text.startswith("top-"):
            try:
                return "top", int(text[4:])
            except ValueError:
                raise ConfigError(f"bad layer selection {spec!r}", hint=_HINT) from None
        try:
            return "indices", [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"bad layer selection {spec!r}", hint=_HINT) from None
    if isinstance(spec, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in spec):
        return "indices", list(spec)
    raise ConfigError(f"bad layer selection {spec!r}", hint=_HINT)


def check_layer_spec(spec: Any) -> None:
    """Refuse a selection that cannot be read, before any model exists (ranges need the depth: select_layers).
    A dict holds one selection per layer group (``{"vision": ..., "text": ...}``)."""
    for part in spec.values() if isinstance(spec, dict) else [spec]:
        _parse(part)


def select_layers(spec: str | Sequence[int] | None, depth: int) -> list[int]:
    """Resolve a layer selection against a model of ``depth`` layers (sorted, unique, in range)."""
    kind, value = _parse(spec)
    if kind == "all":
        return list(range(depth))
    if kind == "top":
        if not 1 <= value <= depth:
            raise ConfigError(f"top-{value} is out of range for a {depth}-layer backbone")
        return list(range(depth - value, depth))
    indices = list(value)
    bad = [i for i in indices if not 0 <= i < depth]
    if bad or not indices:
        raise ConfigError(f"layer indices {bad or indices} are out of range for a {depth}-layer backbone")
    return sorted(set(indices))
