"""Which evaluation protocol the report leads with: instance level, or label level when captions repeat.

eval.json holds both (eval/label_level.py): the top-level metrics are the instance-level ones, `label_level` the
label-level ones, and `primary_protocol` says which one fits the evaluated split. The report compares runs under
one protocol: label level when any run's split has repeated captions and every run carries label-level numbers.
"""

from __future__ import annotations

from typing import Any

from mwa_cli.report.numbers import is_num

PROTOCOLS = ("instance", "label_level")


def choose_primary_protocol(evals: list[dict[str, Any]]) -> str:
    """"label_level" when some run's eval.json names it primary and every run with recall has label-level
    numbers; otherwise "instance"."""
    with_recall = [e for e in evals if isinstance(e.get("i2t"), dict)]
    if any(e.get("primary_protocol") == "label_level" for e in with_recall) and all(
            isinstance(e.get("label_level"), dict) for e in with_recall):
        return "label_level"
    return "instance"


def recall_under(ev: dict[str, Any], protocol: str) -> dict[str, Any] | None:
    """{"i2t", "t2i", "rsum", "mean_recall"} of an eval.json dict under `protocol`, or None when absent."""
    src = ev if protocol == "instance" else ev.get("label_level")
    if not isinstance(src, dict) or not isinstance(src.get("i2t"), dict) or not is_num(src.get("rsum")):
        return None
    rsum = float(src["rsum"])
    return {"i2t": dict(src["i2t"]), "t2i": dict(src["t2i"]), "rsum": rsum,
            "mean_recall": float(src.get("mean_recall", rsum / 6.0))}


def protocol_sentences(evals: list[dict[str, Any]]) -> dict[str, str | None]:
    """The one-sentence description of each protocol, from the first eval.json that has it."""
    out: dict[str, str | None] = {"instance": None, "label_level": None}
    for e in evals:
        out["instance"] = out["instance"] or e.get("instance_protocol")
        ll = e.get("label_level")
        if isinstance(ll, dict):
            out["label_level"] = out["label_level"] or ll.get("protocol")
    return out
