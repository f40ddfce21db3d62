"""Terminal summary with Rich: the same figures as the HTML (from view.py), estimated ones marked."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from mwa_cli.report import view
from mwa_cli.report.glossary import glossary
from mwa_cli.report.i18n import t

STYLE = {"good": "green", "bad": "red", "": ""}


def _fmt(c: dict[str, Any], lang: str, with_sub: bool = True, sep: str = "\n") -> str:
    text = escape(c["text"])
    style = STYLE.get(c["cls"], "")
    out = f"[{style}]{text}[/]" if style else text
    if c["estimated"]:
        out += f" [italic yellow]({escape(t(lang, 'estimated'))})[/]"
    if with_sub and c.get("sub"):
        sub_style = STYLE.get(c.get("sub_cls", ""), "") or "dim"
        out += f"{sep}[{sub_style}]{escape(c['sub'])}[/]"
        if c.get("sub_estimated"):
            out += f" [italic yellow]({escape(t(lang, 'estimated'))})[/]"
    return out


def _widths(rows: list[list[dict[str, Any]]]) -> list[int]:
    """Minimum column widths so figures never wrap or get cut (headers wrap instead)."""
    n = len(rows[0]) if rows else 0
    out = []
    for i in range(n):
        w = 0
        for row in rows:
            c = row[i]
            est = len(t("en", "estimated")) + 3
            w = max(w, len(c["text"]) + (est if c["estimated"] else 0),
                    len(c.get("sub") or "") + (est if c.get("sub_estimated") else 0))
        out.append(w)
    return out


def _fit(con: Console, widths: list[int], name_w: int = 12) -> list[int | None]:
    """Keep the minimum widths only when the table fits the terminal; otherwise let Rich wrap."""
    need = name_w + sum(w + 3 for w in widths) + 2
    return [w if need <= con.width else None for w in widths]


def _name(r: dict[str, Any], lang: str = "en") -> str:
    n = escape(r["name"])
    if r.get("estimated_run"):
        n += f" [italic yellow]({escape(t(lang, 'estimated'))})[/]"
    return f"[bold]{n}[/]" if r.get("is_main") else (f"[dim]{n}[/]" if r.get("is_baseline") else n)


def _print_recall_table(con: Console, rep: dict[str, Any], lang: str, title: str, protocol: str | None) -> None:
    rrows = view.recall_rows(rep, protocol)
    cells = [r["cells"] + [r["rsum"], r["delta_rsum"], r["kept"]] for r in rrows]
    widths = _fit(con, _widths(cells))
    sentence = (rep.get("protocols") or {}).get(protocol or rep.get("primary_protocol", "instance"))
    captions = [sentence] if sentence and view.secondary_protocol(rep) else []
    if protocol is None and any(r.get("recall_ci") for r in rep["runs"]):  # intervals: primary protocol only
        n = next(r["recall_ci"]["n_images"] for r in rep["runs"] if r.get("recall_ci"))
        captions.append(t(lang, "ci_note", resamples=rep["bootstrap"]["resamples"], n=n,
                          seed=rep["bootstrap"]["seed"]))
    if note := view.trivial_note(rep, lang):
        captions.append(note)
    tb = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD,
               caption="\n".join(escape(c) for c in captions) or None, caption_justify="left")
    tb.add_column(t(lang, "col_method"), no_wrap=True)
    heads = [f"{d}\n{k}" for d in ("I→T", "T→I") for k in ("R@1", "R@5", "R@10")]
    heads += ["RSUM", t(lang, "col_delta_rsum"), t(lang, "col_kept")]
    for h, w in zip(heads, widths):
        tb.add_column(h, justify="right", min_width=w, overflow="fold")  # a figure is wrapped, never cut
    for r, row in zip(rrows, cells):
        tb.add_row(_name(r, lang), *[_fmt(c, lang) for c in row])
    con.print(tb)


def print_glossary(con: Console, lang: str) -> None:
    """`mwa report --explain`: one line per term used in the report."""
    con.print(f"[bold]{escape(t(lang, 'sec_glossary'))}[/]", highlight=False)
    for term, text in glossary(lang):
        con.print(f"  [bold]{escape(term)}[/]: {escape(text)}", highlight=False)


def print_report(rep: dict[str, Any], console: Console | None = None, explain: bool = False) -> None:
    """The terminal summary; `explain` adds the glossary (else one line says how to get it)."""
    con = console or Console()
    lang = rep.get("lang", "en")
    unit = t(lang, rep["hours_unit"])
    ds = rep["dataset"]
    con.print(f"[bold]{escape(t(lang, 'title'))}[/]  ·  dataset {escape(str(ds['hash'] or '?')[:12])}  ·  "
              f"{escape(str(ds['split']))}: {ds['n_images']} images, {ds['n_captions']} captions", highlight=False)

    if not rep["baseline"]["found"]:
        lines = []
        if not rep["baseline"]["estimated"]:
            lines.append(f"[bold yellow]{escape(t(lang, 'no_baseline'))}[/]")
        lines.append(escape(t(lang, "no_baseline_hint")))
        if rep["baseline"]["train_command"]:
            lines.append(f"  [cyan]{escape(rep['baseline']['train_command'])}[/]")
        if not rep["baseline"]["estimated"]:
            lines.append(escape(t(lang, "no_baseline_estimate")))
        con.print(Panel("\n".join(lines), border_style="yellow"), highlight=False)
    numerics = sorted({view.eval_numerics_text(r["provenance"]["eval_numerics"]) for r in rep["runs"]
                       if r["provenance"].get("eval_numerics")})
    if numerics:
        con.print(f"[dim]recall {escape('; '.join(numerics))}[/]", highlight=False)
    for n in rep["notes"]:
        con.print(f"[yellow]note:[/] {escape(n)}", highlight=False)
    for entry in rep.get("tunes") or []:
        con.print(f"{escape(t(lang, 'tune_page'))}: {escape(entry['page'])}", highlight=False, soft_wrap=True)

    secondary = view.secondary_protocol(rep)
    primary = rep.get("primary_protocol", "instance")
    title = t(lang, "sec_recall_primary", protocol=t(lang, f"protocol_{primary}")) if secondary else t(lang, "sec_recall")
    _print_recall_table(con, rep, lang, title, None)
    if secondary:
        _print_recall_table(con, rep, lang, t(lang, "sec_recall_secondary", protocol=t(lang, f"protocol_{secondary}")),
                            secondary)

    targets = rep["time_to_quality"]["targets"]
    if any((r.get("time_to_quality") or {}).get("checks") for r in rep["runs"]):
        ref = rep["time_to_quality"]["reference_best_val_rsum"]
        tb = Table(title=t(lang, "sec_ttq"), title_justify="left", box=box.SIMPLE_HEAD, caption_justify="left",
                   caption=escape(t(lang, "sec_ttq_help", ref=f"{ref:.1f}" if ref else "—",
                                    target=rep["time_to_quality"]["target_pct"])))
        tb.add_column(t(lang, "col_method"), no_wrap=True)
        tb.add_column(t(lang, "col_best_val"), justify="right")
        for p in targets:
            tb.add_column(t(lang, "col_to_pct", pct=p), justify="right")
        for r in view.ttq_rows(rep, lang):
            tb.add_row(_name(r, lang), _fmt(r["best"], lang), *[_fmt(r["to"][str(p)], lang) for p in targets])
        con.print(tb)

    srows = view.seed_rows(rep, lang)
    if srows:
        tb = Table(title=t(lang, "sec_seeds"), title_justify="left", box=box.SIMPLE_HEAD, caption_justify="left",
                   caption=escape(t(lang, "sec_seeds_help")))
        for h in (t(lang, "col_method"), t(lang, "col_seeds"), t(lang, "col_test_rsum"), t(lang, "col_best_val"),
                  *[t(lang, "col_to_pct", pct=p) for p in targets]):
            tb.add_column(h, justify="right" if h != t(lang, "col_method") else "left")
        for r in srows:
            tb.add_row(escape(r["name"]), _fmt(r["seeds"], lang), _fmt(r["test"], lang), _fmt(r["best"], lang),
                       *[_fmt(r["to"][str(p)], lang) + f" [dim]({r['reached'][str(p)]}/{r['n']})[/]" for p in targets])
        con.print(tb)

    tb = Table(title=t(lang, "sec_cost"), title_justify="left", box=box.SIMPLE_HEAD)
    tb.add_column(t(lang, "col_method"), no_wrap=True)
    crows = view.cost_rows(rep, lang)
    keys = ("wall", "hours", "sps", "mem", "trainable", "artefact")
    widths = _fit(con, _widths([[r[k] for k in keys] for r in crows]))
    heads = [t(lang, "col_wall"), unit] + [t(lang, k) for k in ("col_sps", "col_mem", "col_trainable", "col_artefact")]
    for h, w in zip(heads, widths):
        tb.add_column(h, justify="right", min_width=w)
    for r in crows:
        tb.add_row(_name(r, lang), *[_fmt(r[k], lang) for k in keys])
    con.print(tb)

    tb = Table(title=t(lang, "sec_roi"), title_justify="left",
               caption="\n".join(escape(x) for x in view.assumption_lines(rep, lang)), caption_justify="left",
               box=box.SIMPLE_HEAD)
    tb.add_column(t(lang, "col_method"), no_wrap=True)
    orows = view.roi_rows(rep)
    keys = ("trainings", "hours_year", "cost_year", "storage", "cost_diff", "storage_diff")
    widths = _fit(con, _widths([[r[k] for k in keys] for r in orows]))
    heads = [t(lang, "col_trainings"), t(lang, "col_hours_year", unit=unit)] + [
        t(lang, k) for k in ("col_cost_year", "col_storage", "col_cost_diff", "col_storage_diff")]
    for h, w in zip(heads, widths):
        tb.add_column(h, justify="right", min_width=w)
    for r in orows:
        tb.add_row(_name(r, lang), *[_fmt(r[k], lang) for k in keys])
    con.print(tb)

    verdict = escape(rep["verdict"])
    if rep["verdict_estimated"]:
        verdict += f" [italic yellow]({escape(t(lang, 'estimated'))})[/]"
    con.print(Panel(verdict, title=t(lang, "verdict"), title_align="left", border_style="blue"), highlight=False)
    for p, why in rep["skipped"]:
        con.print(f"[dim]{escape(t(lang, 'skipped'))}: {escape(p)}: {escape(why)}[/]", highlight=False)
    if explain:
        print_glossary(con, lang)
    else:
        con.print(f"[dim]{escape(t(lang, 'glossary_more'))}[/]", highlight=False)
    if rep.get("html"):
        con.print(f"HTML report: [bold]{escape(rep['html'])}[/]", highlight=False)
