"""The untrained backbone's recall on a data dir's split (zero-shot), evaluated once and cached beside the data.

A trained run is only worth something above this floor, so the report needs it for every run, even when no
`--method frozen` run was made. The cache lives with the data it describes (docs/formats.md, "Zero-shot cache"):
``<data dir>/cache/zero_shot/<key>.json``, where key = the first 32 hex digits of the sha256 of the canonical JSON
of `ZeroShotKey` (dataset hash, split, backbone name, backbone weights sha256, image size, text length, tokenizer
sha256, protocol version). Anything that changes the number changes the key; deleting the data dir deletes it.
Written atomically; an unreadable entry is evaluated again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mwa_cli.errors import DataError
from mwa_cli.eval.bootstrap import QueryRanks
from mwa_cli.fileio import atomic_write_json, sha256_file

CACHE_DIR = ("cache", "zero_shot")
VERSION = 1  # bump when the evaluation protocol changes: older entries are then never used


@dataclass(frozen=True)
class ZeroShotKey:
    """Everything that decides the zero-shot figures of one split."""

    dataset_hash: str
    split: str
    backbone: str
    weights_sha256: str
    img_size: int
    text_len: int
    tokenizer_sha256: str | None
    version: int = VERSION

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class ZeroShot:
    """The zero-shot evaluation: eval.json's dict, its per-query ranks, and where it came from."""

    eval: dict[str, Any]
    ranks: QueryRanks | None
    source: str  # "run" (a frozen run among the runs), "cache" or "evaluated"
    path: Path | None  # the run folder or the cache file
    key: ZeroShotKey | None = None


def _tokenizer_sha(path: Any) -> str | None:
    if not path:
        return None
    p = Path(str(path))
    if p.is_file():
        return sha256_file(p)
    if str(path).startswith("hf:") or p.is_dir():
        return hashlib.sha256(str(path).encode("utf-8")).hexdigest()  # a model's own tokenizer: named by its source
    raise ValueError(f"its tokenizer {path} is not there any more")


def key_for(config: dict[str, Any], adapter_config: dict[str, Any] | None, split: str) -> ZeroShotKey:
    """The key of a run's zero-shot figures, from its config.json and adapter_config.json; ValueError (the reason)
    when the run does not record what the key needs or its backbone has random weights."""
    info = config.get("backbone_info") if isinstance(config.get("backbone_info"), dict) else {}
    sha = info.get("weights_sha256")
    if not config.get("dataset_hash"):
        raise ValueError("the run does not record its dataset hash")
    if not sha:
        raise ValueError("its backbone has no pretrained weights recorded (random, or a run of an older mwa)")
    bb = ((adapter_config or {}).get("backbone") or {}).get("config") or {}
    img, text = bb.get("img_size"), bb.get("text_len") or config.get("text_len")
    if not isinstance(img, int) or not isinstance(text, int):
        raise ValueError("the run does not record its backbone's image size and text length")
    return ZeroShotKey(str(config["dataset_hash"]), str(split), str(info.get("name") or config.get("backbone")),
                       str(sha), img, text, _tokenizer_sha(config.get("tokenizer")))


def cache_file(data_dir: Path, key: ZeroShotKey) -> Path:
    return Path(data_dir).joinpath(*CACHE_DIR) / f"{key.digest()}.json"


def load(data_dir: Path, key: ZeroShotKey) -> ZeroShot | None:
    """The cached entry for `key`, or None (none, unreadable, or written for another key)."""
    path = cache_file(data_dir, key)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry.get("key") != asdict(key) or not isinstance(entry.get("eval"), dict):
            return None
        ranks = QueryRanks.from_dict(entry["ranks"]) if entry.get("ranks") else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return ZeroShot(entry["eval"], ranks, "cache", path, key)


def store(data_dir: Path, key: ZeroShotKey, result: dict[str, Any], ranks: QueryRanks | None) -> Path | None:
    """Write the entry (atomic); None when the data dir cannot be written (the figures are still used)."""
    path = cache_file(data_dir, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"schema_version": 1, "key": asdict(key), "eval": result,
                                 "ranks": ranks.to_dict() if ranks is not None else None})
    except OSError:
        return None
    return path


def ensure(data_dir: Path, config: dict[str, Any], adapter_config: dict[str, Any] | None, split: str, *,
           device: str = "auto") -> ZeroShot:
    """The zero-shot figures of a run's backbone on `split`: from the cache, else evaluated once and cached.
    Raises ValueError (no key: the reason) or MwaError (the backbone or data cannot be loaded)."""
    from mwa_cli.eval.evaluate import evaluate_target

    key = key_for(config, adapter_config, split)
    cached = load(data_dir, key)
    if cached is not None:
        return cached
    result, _, _, ranks = evaluate_target(None, data_dir=data_dir, split=split, device=device, method="frozen",
                                          backbone=str(config.get("backbone") or key.backbone),
                                          weights=config.get("weights"), tokenizer=config.get("tokenizer"),
                                          batch_size=int(config.get("eval_batch_size") or 128))
    if result.get("backbone_weights_sha256") != key.weights_sha256:
        raise DataError(f"the backbone weights at {config.get('weights') or 'the built-in path'} are not the ones "
                        "the runs were trained from (their sha256 differs)",
                        hint="put the original weights file back, or evaluate a frozen run with "
                             "`mwa train DATA --method frozen --weights PATH`")
    path = store(data_dir, key, result, ranks)
    return ZeroShot(result, ranks, "evaluated", path, key)
