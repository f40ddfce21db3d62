"""Terminal summary with Rich: the same figures as the HTML (from view.py), estimated ones marked.

It fits the terminal it is printed on (80 columns when piped): a table is printed whole when it fits with no
figure wrapped; otherwise its columns are stacked as several narrower tables (each repeating the names), and on a
terminal too narrow even for that each row becomes a block of "heading: value" lines. Notes are paragraphs of
their own, wrapped at spaces, so no column is cut, no word lost and no number broken at any width.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mwa_cli.report import view
from mwa_cli.report.glossary import glossary
from mwa_cli.report.i18n import t
from mwa_cli.report.model import Report

STYLE = {"good": "green", "bad": "red", "": ""}


@dataclass
class Grid:
    """One table's content: data-column headings, rows of (name markup, name text, cells), notes below it."""

    title: str
    heads: list[str]
    rows: list[tuple[str, str, list[dict[str, Any]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    name_head: str = ""


def _fmt(c: dict[str, Any], lang: str, sub_sep: str = "\n") -> str:
    """A cell as markup: its figure, then (after `sub_sep`) the small line under it."""
    text = escape(c["text"])
    style = STYLE.get(c["cls"], "")
    out = f"[{style}]{text}[/]" if style else text
    if c["estimated"]:
        out += f" [italic yellow]({escape(t(lang, 'estimated'))})[/]"
    if c.get("sub"):
        sub_style = STYLE.get(c.get("sub_cls", ""), "") or "dim"
        sub = escape(c["sub"]) + (f" ({escape(t(lang, 'estimated'))})" if c.get("sub_estimated") else "")
        out += f"\n[{sub_style}]{sub}[/]" if sub_sep == "\n" else f" [{sub_style}]({sub})[/]"
    return out


def _plain_width(c: dict[str, Any], lang: str) -> int:
    return max(cell_len(line) for line in Text.from_markup(_fmt(c, lang)).plain.split("\n"))


def _name(r: dict[str, Any], lang: str = "en") -> tuple[str, str]:
    """(markup, plain text) of a row's name: bold for the main run, dim for the baseline and the references."""
    n = escape(r["name"])
    plain = r["name"]
    if r.get("estimated_run"):
        n += f" [italic yellow]({escape(t(lang, 'estimated'))})[/]"
        plain += f" ({t(lang, 'estimated')})"
    if r.get("is_main"):
        return f"[bold]{n}[/]", plain
    return (f"[dim]{n}[/]" if r.get("is_baseline") or r.get("reference") else n), plain


def _wide(grid: Grid, lang: str, columns: list[int] | None = None) -> Table:
    """The grid (or its `columns`) as one table: figures never wrap (no_wrap), headings wrap at spaces within
    their column."""
    cols = list(range(len(grid.heads))) if columns is None else columns
    tb = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    tb.add_column(escape(grid.name_head or t(lang, "col_method")), no_wrap=True)
    for i in cols:
        head = grid.heads[i]
        content = max((_plain_width(cells[i], lang) for _, _, cells in grid.rows), default=1)
        longest = max((cell_len(w) for w in head.split()), default=1)
        wrapped = "\n".join(textwrap.fill(part, width=max(content, longest)) for part in head.split("\n"))
        tb.add_column(escape(wrapped), justify="right", no_wrap=True)
    for markup, _, cells in grid.rows:
        tb.add_row(markup, *[_fmt(cells[i], lang) for i in cols])
    return tb


def _column_chunks(con: Console, grid: Grid, lang: str) -> list[list[int]] | None:
    """The grid's columns in consecutive groups, each a table that fits the console (the name column repeated);
    None when even one column with the names is too wide."""
    chunks: list[list[int]] = []
    for i in range(len(grid.heads)):
        if chunks and natural_width(_wide(grid, lang, chunks[-1] + [i])) <= con.width:
            chunks[-1].append(i)
        elif natural_width(_wide(grid, lang, [i])) <= con.width:
            chunks.append([i])
        else:
            return None
    return chunks


def natural_width(renderable: Any) -> int:
    """The width `renderable` takes when nothing constrains it."""
    probe = Console(width=10_000, file=io.StringIO(), color_system=None, legacy_windows=False)
    with probe.capture() as cap:
        probe.print(renderable)
    return max((cell_len(line.rstrip()) for line in cap.get().splitlines()), default=0)


def _stacked(con: Console, grid: Grid, lang: str) -> None:
    """Each row as a block: its name, then one "heading: value (small line)" line per column."""
    for markup, _, cells in grid.rows:
        con.print(markup, highlight=False)
        for head, c in zip(grid.heads, cells):
            con.print(Text.from_markup(f"  {escape(' '.join(head.split()))}: {_fmt(c, lang, sub_sep=' ')}"),
                      highlight=False)


def print_grid(con: Console, grid: Grid, lang: str) -> None:
    """Title, then the grid as one table when it fits the console, else as tables of consecutive columns that each
fit, else (not even one column fits) each row as a block; then its notes."""
    con.print(Text(grid.title, style="bold"), highlight=False)
    chunks = _column_chunks(con, grid, lang) if grid.rows else []
    if chunks is None:
        _stacked(con, grid, lang)
    for n, columns in enumerate(chunks or []):
        if n:
            con.print()
        con.print(_wide(grid, lang, columns))
    for note in grid.notes:
        con.print(Text(note, style="dim"), highlight=False)
    con.print()


def _recall_grid(rep: Report, lang: str, title: str, protocol: str | None) -> Grid:
    rrows = view.recall_rows(rep, protocol, lang)
    heads = [f"{d}\n{k}" for d in ("I→T", "T→I") for k in ("R@1", "R@5", "R@10")]
    heads += ["RSUM", t(lang, "col_delta_rsum"), t(lang, "col_kept")]
    grid = Grid(title, heads, [(*_name(r, lang), r["cells"] + [r["rsum"], r["delta_rsum"], r["kept"]])
                               for r in rrows])
    sentence = (rep.get("protocols") or {}).get(protocol or rep.get("primary_protocol", "instance"))
    if sentence and view.secondary_protocol(rep):
        grid.notes.append(sentence)
    if protocol is None:
        if any(r.get("recall_ci") for r in rep["runs"]):  # intervals: primary protocol only
            n = next(r["recall_ci"]["n_images"] for r in rep["runs"] if r.get("recall_ci"))
            grid.notes.append(t(lang, "ci_note", resamples=rep["bootstrap"]["resamples"], n=n,
                                seed=rep["bootstrap"]["seed"]))
        if any(r["reference"] for r in rrows):
            grid.notes.append(t(lang, "chance_note"))
    if note := view.trivial_note(rep, lang):
        grid.notes.append(note)
    return grid


def _ttq_grid(rep: Report, lang: str) -> Grid:
    targets = rep["time_to_quality"]["targets"]
    ref = rep["time_to_quality"]["reference_best_val_rsum"]
    protocol = t(lang, f"protocol_{rep.get('primary_protocol') or 'instance'}")
    grid = Grid(t(lang, "sec_ttq"), [t(lang, "col_protocol_of", col=t(lang, "col_best_val"), protocol=protocol),
                                     *[t(lang, "col_to_pct", pct=p) for p in targets]],
                notes=[t(lang, "sec_ttq_help", ref=f"{ref:.1f}" if ref else "—",
                         target=rep["time_to_quality"]["target_pct"])])
    grid.rows = [(*_name(r, lang), [r["best"], *[r["to"][str(p)] for p in targets]]) for r in view.ttq_rows(rep, lang)]
    if note := view.ttq_floor_note(rep, lang):
        grid.notes.append(note)
    return grid


def _seed_grid(rep: Report, lang: str, srows: list[dict[str, Any]]) -> Grid:
    targets = rep["time_to_quality"]["targets"]
    grid = Grid(t(lang, "sec_seeds"), [t(lang, "col_seeds"), t(lang, "col_test_rsum"), t(lang, "col_best_val"),
                                       *[t(lang, "col_to_pct", pct=p) for p in targets]],
                notes=[t(lang, "sec_seeds_help")])
    for r in srows:
        reached = [dict(r["to"][str(p)], text=f"{r['to'][str(p)]['text']} ({r['reached'][str(p)]}/{r['n']})")
                   for p in targets]
        grid.rows.append((escape(r["name"]), r["name"], [r["seeds"], r["test"], r["best"], *reached]))
    return grid


def _cost_grid(rep: Report, lang: str) -> Grid:
    keys = ("wall", "hours", "sps", "mem", "trainable", "artefact")
    heads = [t(lang, "col_wall"), t(lang, rep["hours_unit"])] + [
        t(lang, k) for k in ("col_sps", "col_mem", "col_trainable", "col_artefact")]
    rows = [(*_name(r, lang), [r[k] for k in keys]) for r in view.cost_rows(rep, lang)]
    return Grid(t(lang, "sec_cost"), heads, rows)


def _roi_grid(rep: Report, lang: str) -> Grid:
    unit = t(lang, rep["hours_unit"])
    keys = ("trainings", "hours_year", "cost_year", "storage", "cost_diff", "storage_diff")
    heads = [t(lang, "col_trainings"), t(lang, "col_hours_year", unit=unit)] + [
        t(lang, k) for k in ("col_cost_year", "col_storage", "col_cost_diff", "col_storage_diff")]
    return Grid(t(lang, "sec_roi"), heads, [(*_name(r, lang), [r[k] for k in keys]) for r in view.roi_rows(rep)],
                notes=view.assumption_lines(rep, lang))


def print_glossary(con: Console, lang: str) -> None:
    """`mwa report --explain`: one line per term used in the report."""
    con.print(f"[bold]{escape(t(lang, 'sec_glossary'))}[/]", highlight=False)
    for term, text in glossary(lang):
        con.print(f"  [bold]{escape(term)}[/]: {escape(text)}", highlight=False)


def _print_header(con: Console, rep: Report, lang: str) -> None:
    """The title line, the missing-baseline box, then the lines about how the figures were made."""
    _print_title(con, rep, lang)
    if not rep["baseline"]["found"]:
        _print_missing_baseline(con, rep, lang)
    _print_header_notes(con, rep, lang)


def _print_title(con: Console, rep: Report, lang: str) -> None:
    ds = rep["dataset"]
    con.print(f"[bold]{escape(t(lang, 'title'))}[/]  ·  dataset {escape(str(ds['hash'] or '?')[:12])}  ·  "
              f"{escape(str(ds['split']))}: {ds['n_images']} images, {ds['n_captions']} captions", highlight=False)


def _print_missing_baseline(con: Console, rep: Report, lang: str) -> None:
    """A yellow box: no full fine-tuning run found (unless estimated), the command that trains one."""
    baseline = rep["baseline"]
    lines = []
    if not baseline["estimated"]:
        lines.append(f"[bold yellow]{escape(t(lang, 'no_baseline'))}[/]")
    lines.append(escape(t(lang, "no_baseline_hint")))
    if baseline["train_command"]:
        lines.append(f"  [cyan]{escape(baseline['train_command'])}[/]")
    if not baseline["estimated"]:
        lines.append(escape(t(lang, "no_baseline_estimate")))
    con.print(Panel("\n".join(lines), border_style="yellow"), highlight=False)


def _print_header_notes(con: Console, rep: Report, lang: str) -> None:
    """How recall was computed, the report's notes and the tune pages."""
    numerics = sorted({view.eval_numerics_text(r["provenance"]["eval_numerics"]) for r in rep["runs"]
                       if r["provenance"].get("eval_numerics")})
    if numerics:
        con.print(Text(f"recall {'; '.join(numerics)}", style="dim"), highlight=False)
    for n in rep["notes"]:
        con.print(Text.from_markup(f"[yellow]note:[/] {escape(n)}"), highlight=False)
    for entry in rep.get("tunes") or []:
        con.print(f"{escape(t(lang, 'tune_page'))}: {escape(entry['page'])}", highlight=False, soft_wrap=True)


def _print_recall(con: Console, rep: Report, lang: str) -> None:
    """The recall table of the primary protocol, then (when there is one) the secondary protocol's."""
    secondary = view.secondary_protocol(rep)
    if not secondary:
        print_grid(con, _recall_grid(rep, lang, t(lang, "sec_recall"), None), lang)
        return
    primary = rep.get("primary_protocol", "instance")
    title = t(lang, "sec_recall_primary", protocol=t(lang, f"protocol_{primary}"))
    print_grid(con, _recall_grid(rep, lang, title, None), lang)
    title2 = t(lang, "sec_recall_secondary", protocol=t(lang, f"protocol_{secondary}"))
    print_grid(con, _recall_grid(rep, lang, title2, secondary), lang)


def _print_time_to_quality(con: Console, rep: Report, lang: str) -> None:
    """The time-to-quality table, when any run has validation checks."""
    if any((r.get("time_to_quality") or {}).get("checks") for r in rep["runs"]):
        print_grid(con, _ttq_grid(rep, lang), lang)


def _print_seeds(con: Console, rep: Report, lang: str) -> None:
    """The seed-group table, when any method ran with several seeds."""
    if srows := view.seed_rows(rep, lang):
        print_grid(con, _seed_grid(rep, lang, srows), lang)


def _print_roi(con: Console, rep: Report, lang: str) -> None:
    """The yearly ROI table, or the sentence saying why it is withheld."""
    if view.withheld(rep):
        con.print(Text(t(lang, "sec_roi"), style="bold"), highlight=False)
        con.print(Text(t(lang, "roi_withheld")), highlight=False)
        con.print()
    else:
        print_grid(con, _roi_grid(rep, lang), lang)


def _print_verdict(con: Console, rep: Report, lang: str) -> None:
    """The verdict in a blue box, marked when it rests on estimated figures."""
    verdict = escape(rep["verdict"])
    if rep["verdict_estimated"]:
        verdict += f" [italic yellow]({escape(t(lang, 'estimated'))})[/]"
    con.print(Panel(verdict, title=t(lang, "verdict"), title_align="left", border_style="blue"), highlight=False)


def _print_footer(con: Console, rep: Report, lang: str, explain: bool) -> None:
    """The skipped run folders, the glossary (or how to get it) and where the HTML report is."""
    for p, why in rep["skipped"]:
        con.print(Text(f"{t(lang, 'skipped')}: {p}: {why}", style="dim"), highlight=False)
    if explain:
        print_glossary(con, lang)
    else:
        con.print(Text(t(lang, "glossary_more"), style="dim"), highlight=False)
    if rep.get("html"):
        con.print(Text.from_markup(f"HTML report: [bold]{escape(rep['html'])}[/]"), highlight=False)


def print_report(rep: Report, console: Console | None = None, explain: bool = False) -> None:
    """The terminal summary; `explain` adds the glossary (else one line says how to get it)."""
    con = console or Console()
    lang = rep.get("lang", "en")
    _print_header(con, rep, lang)
    _print_recall(con, rep, lang)
    _print_time_to_quality(con, rep, lang)
    _print_seeds(con, rep, lang)
    print_grid(con, _cost_grid(rep, lang), lang)
    _print_roi(con, rep, lang)
    _print_verdict(con, rep, lang)
    _print_footer(con, rep, lang, explain)
