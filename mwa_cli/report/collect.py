"""Find run directories, load their files (docs/formats.md) and check they can be compared.

A run directory is a folder holding ``config.json``. ``mwa report RUN_DIR ...`` names them; ``--runs runs/``
takes every sub-folder of ``runs/`` that is one (a folder named directly that is not a run is searched one level
down too). Runs missing ``eval.json`` or ``timing.json`` cannot be compared: they are skipped with the reason
(shown in the report) unless none is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mwa_cli.errors import MwaError
from mwa_cli.eval.bootstrap import load_ranks
from mwa_cli.run_files import read_metrics_rows, read_run_file
from mwa_cli.runs import RUN_CONFIG, is_run_dir

ARTEFACT = "adapter_model.safetensors"


@dataclass
class Run:
    """Everything the report needs from one run directory (missing optional files are empty)."""

    path: Path
    config: dict[str, Any]
    timing: dict[str, Any]
    eval: dict[str, Any]
    eval_topk: dict[str, Any] | None = None
    train_rows: list[dict[str, Any]] = field(default_factory=list)
    eval_rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl eval rows (the val curve)
    ranks: Any = None  # (split, mwa_cli.eval.bootstrap.QueryRanks) from eval_ranks.json, or None
    adapter_config: dict[str, Any] | None = None
    artefact_bytes: int | None = None
    estimated: bool = False  # the whole run is an estimate (made by --estimate), not a measured run

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        for src in (self.config, self.eval, self.adapter_config or {}):
            if src.get("method"):
                return str(src["method"])
        return "?"

    @property
    def backbone(self) -> str:
        bb = self.config.get("backbone") or self.eval.get("backbone")
        if isinstance(bb, dict):
            bb = bb.get("name")
        if not bb and self.adapter_config:
            bb = (self.adapter_config.get("backbone") or {}).get("name")
        return str(bb or "?")

    @property
    def dataset_hash(self) -> str | None:
        return self.config.get("dataset_hash") or self.eval.get("dataset_hash")

    @property
    def split(self) -> str | None:
        return self.eval.get("split")


def _read_json(path: Path) -> Any:
    """A run file's JSON object, checked for its limits (`mwa_cli.run_files`); a MwaError naming it otherwise."""
    return read_run_file(path.parent, path.name)


def _read_train_rows(path: Path, kind: str = "train") -> list[dict[str, Any]]:
    return [row for row in read_metrics_rows(path)
            if row.get("kind") == kind and (kind != "train" or row.get("loss") is not None)]


def find_run_dirs(run_dirs: list[Path], runs_root: Path | None) -> list[Path]:
    """Resolve the RUN_DIR arguments and ``--runs`` into a sorted, de-duplicated list of run folders."""
    found: list[Path] = []
    roots = list(run_dirs) + ([runs_root] if runs_root is not None else [])
    if not roots:
        raise MwaError("no runs given", hint="name run folders (mwa report runs/a runs/b) or use --runs runs/")
    for root in roots:
        if not root.exists():
            raise MwaError(f"{root} does not exist", hint="check the path; runs are written to runs/<name>/ by mwa train")
        if is_run_dir(root):
            found.append(root)
            continue
        subs = sorted(p for p in root.iterdir() if p.is_dir() and is_run_dir(p)) if root.is_dir() else []
        if not subs:
            raise MwaError(f"{root} holds no run (no config.json in it or in its sub-folders)",
                           hint="train one with `mwa train DATA_DIR --method mwa`")
        found.extend(subs)
    seen: set[Path] = set()
    out = []
    for p in found:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            out.append(p)
    return out


def _unfinished_hint(path: Path) -> str:
    """What to do with a run folder that lacks its results: finish training, or only the evaluation."""
    if (path / ARTEFACT).is_file():
        return f"evaluate it with `mwa eval {path}`"
    return f"the run did not finish: continue it with `mwa train --resume {path}`"


def load_run(path: Path) -> Run:
    """Load one run folder. Raises MwaError (without the path: callers name the run) when config.json,
    timing.json or eval.json is missing or is not what mwa writes."""
    if not is_run_dir(path):
        raise MwaError(f"{RUN_CONFIG} is missing: it is not a run folder")
    for name in ("timing.json", "eval.json"):
        if not (path / name).is_file():
            raise MwaError(f"{name} is missing", hint=_unfinished_hint(path))
    topk = path / "eval_topk.json"
    adapter_cfg = path / "adapter_config.json"
    art = path / ARTEFACT
    return Run(
        path=path,
        config=_read_json(path / RUN_CONFIG),
        timing=_read_json(path / "timing.json"),
        eval=_read_json(path / "eval.json"),
        eval_topk=_read_json(topk) if topk.is_file() else None,
        train_rows=_read_train_rows(path / "metrics.jsonl"),
        eval_rows=_read_train_rows(path / "metrics.jsonl", "eval"),
        ranks=load_ranks(path),
        adapter_config=_read_json(adapter_cfg) if adapter_cfg.is_file() else None,
        artefact_bytes=art.stat().st_size if art.is_file() else None,
    )


def check_same_dataset(runs: list[Run]) -> str | None:
    """Refuse runs trained or evaluated on different data; returns the common dataset hash."""
    groups: dict[str, list[str]] = {}
    for r in runs:
        groups.setdefault(r.dataset_hash or "(unknown)", []).append(str(r.path))
    if len(groups) > 1:
        parts = [f"{h[:12]}: {', '.join(paths)}" for h, paths in groups.items()]
        raise MwaError(
            "these runs were trained on different datasets and cannot be compared:\n    " + "\n    ".join(parts),
            hint="compare runs made from the same data dir (same dataset hash); give their folders explicitly",
        )
    splits: dict[str, list[str]] = {}
    for r in runs:
        splits.setdefault(str(r.split), []).append(str(r.path))
    if len(splits) > 1:
        parts = [f"{s}: {', '.join(paths)}" for s, paths in splits.items()]
        raise MwaError(
            "these runs were evaluated on different splits and cannot be compared:\n    " + "\n    ".join(parts),
            hint="re-evaluate them on the same split, e.g. `mwa eval RUN --split test`",
        )
    return next(iter(groups)) if runs else None


@dataclass
class Collection:
    runs: list[Run]
    skipped: list[tuple[str, str]]  # (path, reason)
    dataset_hash: str | None


def collect(run_dirs: list[Path], runs_root: Path | None = None) -> Collection:
    """Find, load and validate the runs. Runs named explicitly must load; under ``--runs`` broken ones are skipped."""
    explicit = {p.resolve() for p in run_dirs if is_run_dir(p)}
    runs: list[Run] = []
    skipped: list[tuple[str, str]] = []
    for p in find_run_dirs(run_dirs, runs_root):
        try:
            runs.append(load_run(p))
        except MwaError as exc:
            if p.resolve() in explicit:
                raise MwaError(f"{p}: {exc.message}", hint=exc.hint) from None
            skipped.append((str(p), exc.message + (f"; {exc.hint}" if exc.hint else "")))
    if not runs:
        reasons = "; ".join(f"{p}: {why}" for p, why in skipped)
        raise MwaError(f"no complete run to report on ({reasons})",
                       hint="finish a run with `mwa train`, then `mwa eval RUN`")
    return Collection(runs=runs, skipped=skipped, dataset_hash=check_same_dataset(runs))


def resolve_data_dir(run: Run, override: Path | None = None) -> Path | None:
    """The run's data dir (config.json "data_dir"): as written, else relative to the run's project folder."""
    if override is not None:
        return override if override.is_dir() else None
    raw = run.config.get("data_dir")
    if not raw:
        return None
    p = Path(raw)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, run.path.parent.parent / p, run.path.parent / p]
    for c in candidates:
        if (c / "manifest.csv").is_file():
            return c
    return None
