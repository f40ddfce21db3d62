"""`mwa line`: thin Typer wrappers around mwa_cli.lines (add, publish, list, show, rollback, report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from mwa_cli.commands.common import DeviceOption, SummaryJsonOption, console, emit_json, err_console, guarded
from mwa_cli.report.numbers import fmt_bytes, fmt_num

HELP = """Adapter versions per production line: one frozen backbone on the inspection PC, a small adapter per line,
each published as v1, v2, ... with its evaluation and provenance; roll back in one command; `mwa serve --lines`
serves every line side by side.

Typical flow:

  mwa line add line-3 --data data            (data's test split: the line's held-out set)

  mwa line publish line-3 runs/mwa-line3     (refused if worse on the held-out set than the current version)

  mwa index ./photos --line line-3           (the index of the current version)

  mwa serve --lines lines

  mwa line rollback line-3                   (back to the version before)
"""

StoreOption = Annotated[Path, typer.Option("--store", help="The line store folder.")]
DEFAULT_STORE = Path("lines")


def _version_number(text: Optional[str]) -> Optional[int]:
    """`2` or `v2` → 2 (None stays None)."""
    from mwa_cli.errors import ConfigError

    if text is None:
        return None
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise ConfigError(f"{text!r} is not a version", hint="give a version number such as 2 or v2")
    return int(digits)


def _recall(rec: Optional[dict[str, Any]]) -> str:
    if not rec or rec.get("mean_recall") is None:
        return "—"
    ci = rec.get("ci95")
    return fmt_num(rec["mean_recall"], 2) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _when(iso: Optional[str]) -> str:
    """An ISO time as the tables show it: date and minute (the JSON keeps the whole)."""
    return iso[:16].replace("T", " ") if iso else "—"


ADD_HELP = ("Add a production line to a line store (the store is made when new).\n\n"
            "Examples:\n\n  mwa line add line-3 --data data\n\n"
            "  mwa line add 第3ライン --data data --split val --store /srv/lines")
PUBLISH_HELP = ("Publish a finished adapter run to a line as its next version and make it current. Refused: a full "
                "fine-tuning or frozen run, an adapter made for another backbone, one whose held-out recall is below "
                "the current version's 95 % interval (unless --force-worse --why, recorded).\n\nExamples:\n\n"
                "  mwa line publish line-3 runs/mwa-line3\n\n"
                '  mwa line publish line-3 runs/mwa-new --force-worse --why "new defect"')
LIST_HELP = ("The lines of a store and their current versions.\n\nExamples:\n\n"
             "  mwa line list\n\n  mwa line list --store /srv/lines --json")
SHOW_HELP = ("One line: its held-out set, every version (held-out recall with its 95 % interval, run, who "
             "published it and when) and the history of its current version.\n\nExamples:\n\n"
             "  mwa line show line-3\n\n  mwa line show line-3 --verify   (check every version's files against "
             "their sha256)")
ROLLBACK_HELP = ("Make an earlier version current again (by default the one below the current); its files are "
                 "checked first. `mwa serve --lines` switches without a restart.\n\nExamples:\n\n"
                 "  mwa line rollback line-3\n\n"
                 '  mwa line rollback line-3 v1 --why "false rejects on the night shift"')
REPORT_HELP = ("A line's history as a page: recall on the held-out set over versions (with intervals), who "
               "published what and when, forced publishes and rollbacks.\n\nExamples:\n\n"
               "  mwa line report line-3 --html line3.html\n\n"
               "  mwa line report line-3 --html line3.html --lang ja")

LineArgument = Annotated[str, typer.Argument(help="The line.")]


def register(app: typer.Typer) -> None:
    line_app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode="rich")
    app.add_typer(line_app, name="line")
    for name, help_text, command in (("add", ADD_HELP, add_cmd), ("publish", PUBLISH_HELP, publish_cmd),
                                     ("list", LIST_HELP, list_cmd), ("show", SHOW_HELP, show_cmd),
                                     ("rollback", ROLLBACK_HELP, rollback_cmd), ("report", REPORT_HELP, report_cmd)):
        line_app.command(name, help=help_text)(guarded(command))


def add_cmd(
    line: str = typer.Argument(..., help="The line's name (a folder name: letters, digits, _ . -)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data dir of `mwa prepare` whose split is the "
                                        "line's held-out set \\[default: the first published run's own]."),
    split: str = typer.Option("test", "--split", help="The held-out split of --data."),
    store: StoreOption = DEFAULT_STORE,
    json_out: SummaryJsonOption = False,
) -> None:
    from mwa_cli.lines.store import LineStore

    added = LineStore.create(store).add(line, data_dir=data, split=split)
    if json_out:
        emit_json({"line": added.name, "path": str(added.path), "held_out": added.held_out})
        return
    held = added.held_out
    console.print(f"[bold]line[/] {escape(added.name)} added to {escape(str(added.path.parent))}"
                  + (f"; held-out set: {escape(held['split'])} of {escape(held['data_dir'])} "
                     f"({held['n_images']} photos)" if held else "; the first publish sets its held-out set"),
                  highlight=False)
    console.print(f"  next: mwa line publish {escape(added.name)} RUN_DIR --store {escape(str(store))}",
                  highlight=False)


def publish_cmd(
    line: LineArgument,
    run: Path = typer.Argument(..., help="Run folder written by `mwa train`."),
    force_worse: bool = typer.Option(False, "--force-worse", help="Publish even when worse on the held-out "
                                     "set (needs --why)."),
    why: Optional[str] = typer.Option(None, "--why", help="Why: recorded with the version (and the rollback)."),
    device: DeviceOption = "auto",
    store: StoreOption = DEFAULT_STORE,
    json_out: SummaryJsonOption = False,
) -> None:
    from mwa_cli.lines.publish import publish

    say = None if json_out else (lambda msg: err_console.print(f"[dim]{escape(msg)}[/]", highlight=False))
    res = publish(store, line, run, force_worse=force_worse, why=why, device=device, announce=say)
    if json_out:
        emit_json(res)
        return
    _print_published(res)


def list_cmd(store: StoreOption = DEFAULT_STORE, json_out: SummaryJsonOption = False) -> None:
    from mwa_cli.lines.view import list_lines

    res = list_lines(store)
    if json_out:
        emit_json(res)
        return
    _lines_table(res)


def show_cmd(
    line: LineArgument,
    verify: bool = typer.Option(False, "--verify", help="Check every version's files against their sha256."),
    store: StoreOption = DEFAULT_STORE,
    json_out: SummaryJsonOption = False,
) -> None:
    from mwa_cli.lines.view import describe_line

    res = describe_line(store, line, verify=verify)
    if json_out:
        emit_json(res)
        return
    _print_line(res, verify)


def rollback_cmd(
    line: LineArgument,
    version: Optional[str] = typer.Argument(None, help="The version to make current (2 or v2) \\[default: the "
                                            "highest below the current]."),
    why: Optional[str] = typer.Option(None, "--why", help="Why: recorded in the line's history."),
    store: StoreOption = DEFAULT_STORE,
    json_out: SummaryJsonOption = False,
) -> None:
    from mwa_cli.lines.publish import rollback

    res = rollback(store, line, _version_number(version), why=why)
    if json_out:
        emit_json(res)
        return
    console.print(f"[bold]line[/] {escape(res['line'])}: v{res['version']} is current again "
                  f"(was v{res['previous']})", highlight=False)
    if res["next"]:
        console.print(f"  it has no index: {escape(res['next'])}", highlight=False)


def report_cmd(
    line: LineArgument,
    html: Path = typer.Option(..., "--html", help="The HTML file to write."),
    lang: str = typer.Option("en", "--lang", help="en | ja."),
    store: StoreOption = DEFAULT_STORE,
    json_out: SummaryJsonOption = False,
) -> None:
    from mwa_cli.lines.report import write_line_report
    from mwa_cli.lines.view import describe_line

    res = describe_line(store, line)
    path = write_line_report(res, html, lang=lang)
    if json_out:
        emit_json(dict(res, html=str(path)))
        return
    console.print(f"[bold]line[/] {escape(res['line'])}: {len(res['versions'])} version(s) → "
                  f"{escape(str(path))}", highlight=False)


def _print_published(res: dict[str, Any]) -> None:
    """`mwa line publish`'s outcome: the new version, its held-out recall, the check against the current one."""
    console.print(f"[bold]line[/] {escape(res['line'])}: v{res['version']} published and current "
                  f"(was {'v' + str(res['previous']) if res['previous'] else 'none'})", highlight=False)
    console.print(f"  held-out mean recall {_recall(_view(res['held_out']))}", highlight=False)
    check = res.get("check")
    if check:
        d = check["difference"]
        console.print(f"  vs v{check['against']}: {_recall(_view(check['current']))}; RSUM difference "
                      f"{d['rsum']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]", highlight=False)
        if check.get("forced"):
            console.print("  [yellow]published worse on purpose[/] (--force-worse, recorded)")
    overlap = res["held_out"].get("overlap_with_training")
    if overlap:
        err_console.print(f"[yellow]warning:[/] {overlap} held-out photo(s) were in the run's training split: "
                          "its held-out recall is optimistic", highlight=False)
    console.print(f"  next: {escape(res['next'])}", highlight=False)


def _lines_table(res: dict[str, Any]) -> None:
    """`mwa line list`'s table: one row per line."""
    table = Table(title=f"lines in {escape(res['store'])}", title_justify="left")
    for col in ("line", "current", "versions", "backbone", "indexed", "changed"):
        table.add_column(col, overflow="fold")
    for r in res["lines"]:
        table.add_row(escape(r["line"]), f"v{r['current']}" if r.get("current") else "—",
                      str(r.get("versions", "—")), escape(str(r.get("backbone") or "—")),
                      "yes" if r.get("indexed") else "no",
                      escape(_when(r["changed"]) if r.get("changed") else str(r.get("error"))))
    console.print(table)


def _print_line(res: dict[str, Any], verify: bool) -> None:
    """`mwa line show`: the line's header, its versions' table and the last ten history entries."""
    held = res["held_out"] or {}
    console.print(f"[bold]line[/] {escape(res['line'])} · current "
                  f"{'v' + str(res['current']) if res['current'] else 'none'} · backbone "
                  f"{escape(str((res['backbone'] or {}).get('name') or '—'))} · held-out "
                  f"{escape(str(held.get('split', '—')))} of {escape(str(held.get('data_dir', '—')))}",
                  highlight=False)
    _versions_table(res["versions"], verify)
    for e in res["history"][-10:]:
        console.print(f"  {escape(_when(e.get('at')))} {e.get('action')} → v{e.get('version')} by "
                      f"{escape(str(e.get('by')))}" + (f": {escape(e['why'])}" if e.get("why") else ""),
                      highlight=False)


def _view(summary: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """A recall summary of mwa_cli.lines.heldout in the shape `_recall` prints."""
    if not summary:
        return None
    return {"mean_recall": summary.get("mean_recall"), "ci95": (summary.get("ci95") or {}).get("mean_recall")}


def _versions_table(rows: list[dict[str, Any]], verify: bool) -> None:
    table = Table(title_justify="left")
    for col in ("ver", "recall [95 %]", "run", "indexed", "published", "by"):
        table.add_column(col, overflow="fold")
    if verify:
        table.add_column("files", overflow="fold")
    for r in rows:
        mark = "→ " if r["current"] else "  "
        forced = " [yellow](forced)[/]" if r.get("forced") else ""
        cells = [f"{mark}v{r['version']}", _recall(r.get("held_out")) + forced, escape(str(r.get("run") or "—")),
                 "yes" if r["indexed"] else "no", _when(r.get("published")), escape(str(r.get("by") or "—"))]
        if verify:
            cells.append(escape(r.get("integrity", "")))
        table.add_row(*cells)
    console.print(table)
    console.print("  recall: mean recall on the held-out set at publish time, 95 % interval",
                  highlight=False)
    sizes = [r.get("adapter_bytes") for r in rows if r.get("adapter_bytes")]
    if sizes:
        console.print(f"  adapters: {fmt_bytes(sizes[-1])} each (the backbone is shared)", highlight=False)
