"""The line's quality gate: a version evaluated on the line's held-out set (`mwa eval`'s evaluation), its recall
with a 95 % bootstrap interval over the held-out photos, and the rule that refuses a worse adapter.

The rule: a candidate is refused when its RSUM on the held-out set (primary protocol: label level where captions
repeat, as the report) is below the lower end of the current version's 95 % interval, both evaluated now on the
same photos. The paired difference (candidate − current, same resamples) is recorded beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mwa_cli.eval.bootstrap import QueryRanks, bootstrap, paired_difference

HELD_OUT_DIR = "held_out"  # in a version folder: eval.json and eval_ranks.json on the line's held-out set
RULE = ("refused when the candidate's held-out RSUM is below the lower end of the current version's 95 % "
        "bootstrap interval (both evaluated on the same held-out photos)")


def evaluate(folder: Path, held_out: dict[str, Any], *, weights: str | None, tokenizer: str | None,
             device: str) -> tuple[dict[str, Any], QueryRanks]:
    """(eval.json dict, per-query ranks) of the adapter in `folder` on the line's held-out split."""
    from mwa_cli.eval.evaluate import evaluate_target

    result, _top, _out, ranks = evaluate_target(folder, data_dir=held_out["data_dir"], split=held_out["split"],
                                                device=device, weights=weights, tokenizer=tokenizer)
    return result, ranks


def primary_ranks(result: dict[str, Any], ranks: QueryRanks) -> tuple[str, QueryRanks]:
    """(protocol, ranks) the eval names primary (label-level ranks when it says so and they were kept)."""
    if result.get("primary_protocol") == "label_level" and ranks.label_level is not None:
        return "label_level", ranks.label_level
    return "instance", ranks


def recall_summary(result: dict[str, Any], ranks: QueryRanks | None) -> dict[str, Any]:
    """Recall of one evaluation under its primary protocol, with 95 % intervals when the ranks are known."""
    protocol = "instance"
    src = result
    ci = None
    if ranks is not None:
        protocol, qr = primary_ranks(result, ranks)
        src = result if protocol == "instance" else result["label_level"]
        boot = bootstrap(qr)
        ci = {"rsum": boot["ci95"]["rsum"], "mean_recall": [v / 6.0 for v in boot["ci95"]["rsum"]],
              "resamples": boot["resamples"], "seed": boot["seed"], "level": boot["level"]}
    rsum = float(src["rsum"])
    return {"split": result.get("split"), "protocol": protocol, "rsum": rsum,
            "mean_recall": float(src.get("mean_recall", rsum / 6.0)), "i2t": dict(src["i2t"]), "t2i": dict(src["t2i"]),
            "ci95": ci, "n_images": result.get("n_images"), "n_captions": result.get("n_captions"),
            "dataset_hash": result.get("dataset_hash")}


def compare(candidate: tuple[dict[str, Any], QueryRanks], current: tuple[dict[str, Any], QueryRanks],
            current_version: int) -> dict[str, Any]:
    """The gate's record: both summaries, the paired difference and whether the candidate is worse (`RULE`)."""
    cand, cur = recall_summary(*candidate), recall_summary(*current)
    _, a = primary_ranks(*candidate)
    _, b = primary_ranks(*current)
    diff = paired_difference(a, b)
    lower = cur["ci95"]["rsum"][0]
    return {"against": current_version, "protocol": cur["protocol"], "metric": "rsum", "candidate": cand,
            "current": cur, "difference": {"rsum": diff["value"]["rsum"], "ci95": diff["ci95"]["rsum"]},
            "worse": cand["rsum"] < lower, "rule": RULE, "forced": None}


def training_overlap(run_config: dict[str, Any], held_out: dict[str, Any]) -> int | None:
    """Held-out photos that the run trained on (its data dir's train split), or None when that cannot be told."""
    from mwa_cli.data.manifest import load_manifest
    from mwa_cli.errors import MwaError

    data_dir = run_config.get("data_dir")
    if not data_dir or not Path(data_dir).is_dir():
        return None
    try:
        trained = load_manifest(Path(data_dir))
        held = load_manifest(Path(held_out["data_dir"]))
    except MwaError:
        return None
    train_ids = set(trained.loc[trained["split"] == "train", "image_id"])
    return int(held.loc[held["split"] == held_out["split"], "image_id"].drop_duplicates().isin(train_ids).sum())
