"""The two floors every recall table shows: chance (a random ranking) and the zero-shot backbone.

* Chance per protocol (`mwa_cli.eval.chance`): from the runs' eval.json (`chance`, `label_level.chance`), else
  computed from the data dir's manifest for the evaluated split (runs evaluated by an older mwa).
* Zero-shot: a frozen run among the runs (same backbone and weights), else the data dir's zero-shot cache, else
  evaluated once and cached (`mwa_cli.eval.zero_shot`); without one the report says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mwa_cli.errors import MwaError
from mwa_cli.eval import zero_shot as zs
from mwa_cli.eval.chance import instance_chance
from mwa_cli.report.collect import Run, resolve_data_dir
from mwa_cli.report.gallery import DataDir
from mwa_cli.report.protocols import PROTOCOLS

FROZEN = "frozen"


def _full(chance: Any) -> dict[str, Any] | None:
    return chance if isinstance(chance, dict) and isinstance(chance.get("i2t"), dict) and "rsum" in chance else None


def _from_eval(ev: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    return {"instance": _full(ev.get("chance")), "label_level": _full((ev.get("label_level") or {}).get("chance"))}


def _from_manifest(data: DataDir, split: str, key: str) -> dict[str, dict[str, Any]]:
    import torch  # only for runs evaluated by an older mwa (their eval.json has no chance)

    from mwa_cli.eval.evaluate import image_order
    from mwa_cli.eval.label_level import level_chance, protocol_groups

    rows = data.split_rows(split)
    if not len(rows):
        return {}
    _, labels, t2i = image_order(rows["image_id"], rows["label"])
    if key == "label" and not all(labels):
        key = "caption"
    groups = protocol_groups(key, labels, [str(c) for c in rows["caption"]], torch.tensor(t2i))
    return {"instance": instance_chance(t2i), "label_level": level_chance(*groups)}


def chance(evals: list[dict[str, Any]], data: DataDir | None, split: str | None) -> dict[str, Any]:
    """{"instance": {...} | None, "label_level": {...} | None}: each protocol's chance recalls and RSUM range."""
    out: dict[str, Any] = {p: None for p in PROTOCOLS}
    for ev in evals:
        for proto, value in _from_eval(ev).items():
            out[proto] = out[proto] or value
    if (out["instance"] is None or out["label_level"] is None) and data is not None and split:
        key = next((str((e.get("label_level") or {}).get("key")) for e in evals if (e.get("label_level") or {})
                    .get("key")), "caption")
        try:
            computed = _from_manifest(data, split, key)
        except (KeyError, ValueError):
            computed = {}
        out = {p: out[p] or computed.get(p) for p in PROTOCOLS}
    return out


def _same_backbone(a: Run, b: Run) -> bool:
    info_a, info_b = a.config.get("backbone_info") or {}, b.config.get("backbone_info") or {}
    return a.backbone == b.backbone and info_a.get("weights_sha256") == info_b.get("weights_sha256")


def _frozen_run(runs: list[Run], ref: Run) -> Run | None:
    return next((r for r in runs if r.method == FROZEN and not r.estimated and r.split == ref.split
                 and _same_backbone(r, ref)), None)


def zero_shot(runs: list[Run], ref: Run | None, *, data_dir: Path | None = None, evaluate: bool = True,
              say: Callable[[str], None] | None = None) -> tuple[zs.ZeroShot | None, str | None]:
    """(zero-shot figures of `ref`'s backbone on its split, None) or (None, why there are none)."""
    if ref is None:
        return None, "no trained run to take the backbone from"
    frozen = _frozen_run(runs, ref)
    if frozen is not None:
        ranks = frozen.ranks[1] if frozen.ranks is not None and frozen.ranks[0] == frozen.split else None
        return zs.ZeroShot(frozen.eval, ranks, "run", frozen.path), None
    data = resolve_data_dir(ref, data_dir)
    if data is None:
        return None, f"the data dir of {ref.name} was not found (--data DIR)"
    split = str(ref.split or "test")
    try:
        key = zs.key_for(ref.config, ref.adapter_config, split)
    except ValueError as exc:
        return None, f"{ref.name}: {exc}"
    cached = zs.load(data, key)
    if cached is not None or not evaluate:
        return cached, (None if cached is not None else "not in the zero-shot cache")
    if say is not None:
        say(f"evaluating the untrained {key.backbone} on the {split} split once (zero-shot; cached in "
            f"{zs.cache_file(data, key).parent})")
    try:
        return zs.ensure(data, ref.config, ref.adapter_config, split), None
    except (MwaError, ValueError, OSError) as exc:
        return None, f"the zero-shot backbone could not be evaluated: {getattr(exc, 'message', exc)}"
