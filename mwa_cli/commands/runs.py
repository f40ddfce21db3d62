"""`mwa runs` and `mwa show`: thin Typer wrappers around mwa_cli.runs_view (list runs; one run in detail)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from mwa_cli.commands.common import console, emit_json, guarded, shown
from mwa_cli.report.numbers import fmt_duration, fmt_num

STYLE = {"finished": "green", "pruned": "blue", "running": "cyan", "interrupted": "yellow", "failed": "red",
         "damaged": "red"}

RUNS_HELP = """List the runs in a folder: name, method, backbone, status (finished, running, interrupted, failed, damaged;
pruned: a tuning trial `mwa tune` stopped early), test RSUM and wall time.

Examples:

  mwa runs

  mwa runs runs/demo/runs

  mwa runs --runs runs/demo/runs

  mwa runs --json
"""

SHOW_HELP = """One run in detail: its configuration, progress (step, loss, validation checks; for a run still
training, an ETA), test metrics and timing; for an interrupted run, the command that resumes it.

Examples:

  mwa show runs/mwa-beit3-base-20260101-120000

  mwa show mwa --out runs/demo/runs

  mwa show runs/demo/runs/mwa --json
"""


def _status(st: str) -> str:
    return f"[{STYLE.get(st, '')}]{st}[/]"


def register(app: typer.Typer) -> None:
    @app.command("runs", help=RUNS_HELP)
    @guarded
    def runs_cmd(
        positional: Optional[Path] = typer.Argument(None, metavar="FOLDER", show_default=False,
                                                    help="Folder holding run folders (or one run folder); "
                                                         "default runs."),
        runs: Optional[Path] = typer.Option(None, "--runs", help="The same folder, spelled as for `mwa report`."),
        json_out: bool = typer.Option(False, "--json", help="Print the list as JSON on stdout only."),
    ) -> None:
        from mwa_cli.runs_view import list_runs, runs_folder

        folder = runs_folder(positional, runs)
        rows = list_runs(folder)
        if json_out:
            emit_json(rows)
            return
        if not rows:
            console.print(f"no run folders in {shown(str(folder))}", highlight=False)
            return
        tb = Table(box=box.SIMPLE_HEAD)
        for head in ("run", "method", "backbone", "status", "test RSUM", "wall time"):
            tb.add_column(head, justify="right" if head in ("test RSUM", "wall time") else "left")
        for r in rows:
            metric = r["metric"]
            tb.add_row(shown(r["name"]), shown(str(r["method"] or "?")), shown(str(r["backbone"] or "?")),
                       _status(r["status"]), fmt_num(metric["value"], 2) if metric else "—",
                       fmt_duration(r["wall_s"]))
        console.print(tb)
        for r in rows:
            if r.get("problem"):  # a run with a damaged file: listed, with what is wrong, and the others unharmed
                console.print(f"[red]damaged[/] {shown(r['name'])}: {shown(r['problem'])}", highlight=False)

    @app.command("show", help=SHOW_HELP)
    @guarded
    def show_cmd(
        run: str = typer.Argument(..., help="Run folder, or a run name under --out."),
        out: Path = typer.Option(Path("runs"), "--out", help="Folder of runs, for a run given by name."),
        json_out: bool = typer.Option(False, "--json", help="Print everything as JSON on stdout only."),
    ) -> None:
        from mwa_cli.runs_view import details, resolve_run

        d = details(resolve_run(run, out))
        if json_out:
            emit_json(d)
            return
        for line in show_lines(d):
            console.print(line, highlight=False)


def show_lines(d: dict) -> list[str]:
    """The terminal text of `mwa show` (Rich markup)."""
    lines = [f"[bold]{shown(d['name'])}[/]  {_status(d['status'])}  {shown(d['path'])}"]
    for k, v in d["config"].items():
        lines.append(f"  {k}: {shown(str(v))}")
    p = d["progress"]
    if p["step"] is not None:
        total = f" of {p['planned_steps']}" if p["planned_steps"] else ""
        loss = f" · loss {p['loss']:.4f}" if isinstance(p["loss"], (int, float)) else ""
        level = f" ({p['val_protocol'].replace('_', ' ')})" if p.get("val_protocol") else ""
        lines.append(f"progress: step {p['step']}{total}{loss} · {fmt_duration(p['elapsed_s'])} elapsed · "
                     f"{p['val_checks']} val check(s), best val RSUM {fmt_num(p['best_val_rsum'], 2)}{level}")
    if p["eta_s"] is not None:
        basis = "at most, under its budget" if p["eta_basis"] == "budget" else "from its step rate"
        lines.append(f"ETA: about {fmt_duration(p['eta_s'])} left ({basis})")
    ev = d["eval"]
    if ev and ev.get("i2t"):
        level = "label level: captions repeat" if ev["protocol"] == "label_level" else "instance level"
        lines.append(f"{shown(ev.get('split', 'test'))} ({ev.get('n_images')} images, {level}): i2t R@1/5/10 "
                     f"{ev['i2t']['r1']:.1f}/{ev['i2t']['r5']:.1f}/{ev['i2t']['r10']:.1f} · t2i R@1/5/10 "
                     f"{ev['t2i']['r1']:.1f}/{ev['t2i']['r5']:.1f}/{ev['t2i']['r10']:.1f} · RSUM {ev['rsum']:.2f}")
    tm = d["timing"]
    if tm:
        lines.append(f"timing: wall {fmt_duration(tm.get('wall_s'))}, {tm.get('steps')} steps, "
                     f"{fmt_num(tm.get('samples_per_s'))} samples/s on {shown(str(tm.get('device_name')))}"
                     + (f"; {shown(str(tm['stop_reason']))}" if tm.get("stop_reason") else ""))
    if d["resume_command"]:
        lines.append(f"[yellow]resume with:[/] {shown(d['resume_command'])}")
    return lines
