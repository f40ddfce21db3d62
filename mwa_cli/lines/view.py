"""What `mwa line list`, `mwa line show` and `mwa line report` say about lines: read-only (nothing is locked),
from the records alone unless asked to check every version's files (`verify`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mwa_cli.errors import MwaError
from mwa_cli.lines.store import INDEX_DIR, Line, LineStore


def _recall(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if not summary:
        return None
    ci = summary.get("ci95") or {}
    return {"mean_recall": summary.get("mean_recall"), "ci95": ci.get("mean_recall"),
            **{k: summary.get(k) for k in ("protocol", "split", "dataset_hash", "n_images")}}


def version_row(line: Line, n: int, *, verify: bool = False) -> dict[str, Any]:
    """One version as the tables show it (`verify`: its files checked against their sha256: "ok" or why not)."""
    row: dict[str, Any] = {"version": n, "current": n == line.current,
                           "indexed": (line.version_path(n) / INDEX_DIR / "index.json").is_file()}
    try:
        rec = line.verify_version(n) if verify else line.version(n)
    except MwaError as exc:
        return dict(row, integrity=exc.message)
    check = rec.get("check") or {}
    row.update({"published": rec.get("published"), "by": rec.get("by"), "why": rec.get("why"),
                "run": (rec.get("run") or {}).get("name"), "run_path": (rec.get("run") or {}).get("path"),
                "method": rec.get("method"), "trainable_params": rec.get("trainable_params"),
                "adapter_bytes": rec.get("adapter_bytes"), "held_out": _recall(rec.get("held_out")),
                "run_eval": _recall(rec.get("run_eval")),
                "check": {"against": check.get("against"), "worse": check.get("worse"),
                          "difference_rsum": (check.get("difference") or {}).get("rsum"),
                          "difference_ci95": (check.get("difference") or {}).get("ci95")} if check else None,
                "forced": check.get("forced"), "overlap_with_training":
                    (rec.get("held_out") or {}).get("overlap_with_training")})
    if verify:
        row["integrity"] = "ok"
    return row


def describe_line(store: str | Path, name: str, *, verify: bool = False) -> dict[str, Any]:
    """The line, every version (newest last) and the history of its pointer."""
    st = LineStore.open(store)
    line = st.line(name)
    return {"line": line.name, "store": str(st.root), "path": str(line.path), "current": line.current,
            "held_out": line.held_out, "backbone": line.backbone,
            "versions": [version_row(line, v, verify=verify) for v in line.published()],
            "history": line.history}


def list_lines(store: str | Path) -> dict[str, Any]:
    """Every line of the store with its current version."""
    st = LineStore.open(store)
    rows = []
    for name in st.names():
        try:
            line = st.line(name)
        except MwaError as exc:
            rows.append({"line": name, "error": exc.message})
            continue
        bb = line.backbone or {}
        cur = line.current
        rows.append({"line": name, "current": cur, "versions": len(line.published()),
                     "backbone": bb.get("name"), "held_out": (line.held_out or {}).get("data_dir"),
                     "changed": line.pointer.get("changed"),
                     "indexed": cur is not None and (line.index_path(cur) / "index.json").is_file()})
    return {"store": str(st.root), "lines": rows}
