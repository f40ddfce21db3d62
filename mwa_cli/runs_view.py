"""What `mwa runs` and `mwa show` say about run folders: status (finished / pruned / running / interrupted /
failed), the headline metric, wall time, and for a run still training its step and ETA. Read-only: nothing is
locked or written, so looking at a run never disturbs the process training it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mwa_cli.errors import ConfigError
from mwa_cli.outdir import LOCK
from mwa_cli.run_files import BadRunFile, read_run_file
from mwa_cli.safe_open import InputFileError, read_bytes, read_text
from mwa_cli.train.checkpoint import find_checkpoint
from mwa_cli.train.run_dir import RunDir, is_run_folder

CONFIG_KEYS = ("method", "backbone", "data_dir", "budget", "epochs", "steps", "batch_size", "lr", "seed", "device",
               "precision", "command")


def _json(path: Path) -> dict[str, Any]:
    """A run file's JSON object, {} when the run has none; `BadRunFile` when it is not what mwa writes."""
    return read_run_file(path.parent, path.name, missing={})


def writer_pid(run: Path) -> int | None:
    """The pid of the live process writing the run (the one its lock file names, if it is still an mwa
    process), else None. The lock itself is not touched: probing it could refuse a run that is starting."""
    try:
        text = read_text(run / LOCK, limit=256).strip()
        pid = int(text.rsplit(" ", 1)[-1])
    except (InputFileError, ValueError):
        return None
    try:
        cmdline = read_bytes(f"/proc/{pid}/cmdline", limit=1 << 16).replace(b"\0", b" ").decode("utf-8", "replace")
    except InputFileError:
        return None
    return pid if "mwa" in cmdline else None


def status(run: Path) -> str:
    """finished | pruned | running | interrupted | failed."""
    if writer_pid(run) is not None:
        return "running"
    timing = _json(run / "timing.json")
    if timing.get("status") == "pruned" and (run / "eval.json").is_file():
        return "pruned"  # a tuning trial stopped early by `mwa tune` (finished, with its best adapter published)
    if timing.get("status") in (None, "completed") and (run / "eval.json").is_file():
        return "finished"  # (timing.json of older versions has no status)
    if timing.get("status") == "interrupted" or find_checkpoint(run) is not None:
        return "interrupted"  # a checkpoint to resume from
    return "failed"  # ended (non-finite loss, a crash, a kill) with nothing to resume


def _primary(ev: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(protocol, figures) of an eval.json dict under its primary protocol (label level when captions repeat)."""
    if ev.get("primary_protocol") == "label_level" and isinstance(ev.get("label_level"), dict):
        return "label_level", ev["label_level"]
    return "instance", ev


def headline(ev: dict[str, Any]) -> tuple[float | None, str]:
    """(RSUM, protocol) under the eval's primary protocol (label level when captions repeat), as the report uses."""
    protocol, fig = _primary(ev)
    return fig.get("rsum"), protocol


def eval_summary(ev: dict[str, Any]) -> dict[str, Any] | None:
    """`mwa show`'s evaluation: the split and the primary protocol's recalls, named, with the instance RSUM."""
    if not ev:
        return None
    protocol, fig = _primary(ev)
    out = {k: ev.get(k) for k in ("split", "n_images", "n_captions") if k in ev}
    out.update({k: fig.get(k) for k in ("i2t", "t2i", "rsum") if k in fig}, protocol=protocol,
               instance_rsum=ev.get("rsum"))
    return out


def progress(run: Path, cfg: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Step, planned steps, last loss, val checks and (while running) an ETA, from metrics.jsonl and config.json."""
    rows = RunDir(run).read_metrics()
    train_rows = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval" and r.get("split") == "val"]
    last = train_rows[-1] if train_rows else {}
    plan = cfg.get("plan") if isinstance(cfg.get("plan"), dict) else {}
    total = plan.get("total_steps") if isinstance(plan.get("total_steps"), int) else None
    val_protocol = str(evals[-1].get("protocol", "instance")) if evals else None  # rows of older mwa: instance
    out: dict[str, Any] = {"step": last.get("step"), "planned_steps": total, "loss": last.get("loss"),
                           "elapsed_s": last.get("time_s"), "val_checks": len(evals),
                           "best_val_rsum": max((e["rsum"] for e in evals if isinstance(e.get("rsum"), (int, float))
                                                 and e.get("protocol", "instance") == val_protocol), default=None),
                           "val_protocol": val_protocol, "eta_s": None, "eta_basis": None}
    step, elapsed = last.get("step"), last.get("time_s")
    if not isinstance(step, int) or not isinstance(elapsed, (int, float)):
        return out
    since = max(0.0, (now or time.time()) - (run / "metrics.jsonl").stat().st_mtime)  # since the last row
    budget_s = cfg.get("budget_s")
    if isinstance(budget_s, (int, float)):
        out["eta_s"], out["eta_basis"] = max(0.0, budget_s - elapsed - since), "budget"
    elif isinstance(total, int) and step > 0 and elapsed > 0:
        out["eta_s"], out["eta_basis"] = max(0.0, (total - step) * elapsed / step - since), "step rate"
    return out


def summary(run: Path) -> dict[str, Any]:
    """One row of `mwa runs`: name, method, backbone, status, metric, wall time."""
    cfg, timing, ev = _json(run / "config.json"), _json(run / "timing.json"), _json(run / "eval.json")
    st = status(run)
    rsum, protocol = headline(ev) if st == "finished" else (None, None)
    wall = timing.get("wall_s") if st != "running" else progress(run, cfg)["elapsed_s"]
    return {"name": run.name, "path": str(run), "method": cfg.get("method"), "backbone": cfg.get("backbone"),
            "status": st, "metric": None if rsum is None else {"name": f"{ev.get('split', 'test')} RSUM",
                                                                  "value": rsum, "protocol": protocol},
            "wall_s": wall}


def runs_folder(positional: Path | None, option: Path | None) -> Path:
    """The folder of `mwa runs`: given as `mwa runs FOLDER` or, as for `mwa report`, `mwa runs --runs FOLDER`
    (default runs/). Two different folders are refused rather than one silently ignored."""
    if positional is not None and option is not None and Path(positional) != Path(option):
        raise ConfigError(f"two folders given: {positional} and --runs {option}",
                          hint=f"give one: mwa runs --runs {option}")
    return Path(positional or option or "runs")


def list_runs(folder: Path) -> list[dict[str, Any]]:
    """Every run folder directly inside `folder` (or `folder` itself when it is a run), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"no such folder: {folder}", hint="give the folder your runs are in, e.g. mwa runs runs")
    runs = [folder] if is_run_folder(folder) else sorted(p for p in folder.iterdir() if p.is_dir() and is_run_folder(p))
    return [_listed(p) for p in runs]


def _listed(run: Path) -> dict[str, Any]:
    """`summary(run)`, or for a run with a damaged file a row saying so: one bad run never hides the others."""
    try:
        return summary(run)
    except BadRunFile as exc:
        return {"name": run.name, "path": str(run), "method": None, "backbone": None, "status": "damaged",
                "metric": None, "wall_s": None, "problem": exc.message}


def resolve_run(run: str, out: Path = Path("runs")) -> Path:
    """A run folder path, or a run name under `out`."""
    for cand in (Path(run), out / run):
        if cand.is_dir() and is_run_folder(cand):
            return cand
    raise ConfigError(f"no run folder at {run!r}", hint=f"give a run folder, e.g. {out / 'NAME'}; `mwa runs {out}` "
                                                         "lists them")


def details(run: Path) -> dict[str, Any]:
    """`mwa show RUN`: the summary plus config, progress, evaluation and timing."""
    cfg, timing, ev = _json(run / "config.json"), _json(run / "timing.json"), _json(run / "eval.json")
    out = summary(run)
    out["config"] = {k: cfg.get(k) for k in CONFIG_KEYS if cfg.get(k) is not None}
    out["progress"] = progress(run, cfg)
    if out["status"] != "running":  # the run's own totals, not its last logged row
        out["progress"].update(eta_s=None, eta_basis=None)
        if isinstance(timing.get("steps"), int):
            out["progress"].update(step=timing["steps"], elapsed_s=timing.get("wall_s"))
    out["eval"] = eval_summary(ev)
    out["timing"] = {k: timing.get(k) for k in ("wall_s", "train_s", "eval_s", "steps", "samples_per_s",
                                                "device_hours", "device_name", "peak_mem_gib", "stop_reason",
                                                "best") if k in timing} or None
    ckpt = find_checkpoint(run)
    out["checkpoint"] = str(ckpt) if ckpt is not None else None
    out["resume_command"] = f"mwa train --resume {run}" if out["status"] == "interrupted" else None
    return out
