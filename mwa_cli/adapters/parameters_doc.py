"""The rows of docs/parameters.md: each method applied to a fresh backbone and its parameters counted
(``scripts/param_counts.py`` and ``scripts/hf_param_counts.py`` print them)."""

from __future__ import annotations

from typing import Any

from mwa_cli.adapters.registry import apply_method


def parameter_row(model: Any, method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply ``method`` to a fresh ``model`` and account for it: backbone, added and trainable parameters."""
    backbone = sum(p.numel() for p in model.parameters())
    applied = apply_method(model, method, options)
    shown = {k: v for k, v in applied.options.items() if k in ("rank", "ae_width", "preset")}
    if options and "layers" in options:
        shown["layers"] = options["layers"]
    return {"method": method, "options": shown, "backbone": backbone, "added": applied.added_params(),
            "trainable": applied.trainable_params(), "total": applied.total_params()}


def markdown_row(name: str, row: dict[str, Any]) -> str:
    """One line of docs/parameters.md."""
    return (f"| {name} | {row['method']} | {row['options'] or ''} | {row['backbone']:,} | {row['added']:,} | "
            f"{100 * row['added'] / row['backbone']:.2f} | {row['trainable']:,} | "
            f"{100 * row['trainable'] / row['total']:.2f} |")
