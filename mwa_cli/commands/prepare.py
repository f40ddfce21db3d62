"""`mwa prepare`: thin Typer wrapper around mwa_cli.data.prepare.prepare_dataset."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from mwa_cli.commands.common import console, emit_json, err_console, guarded, shown
from mwa_cli.data.images import DEFAULT_MAX_PIXELS

HELP = """Ingest a folder of photos and captions into a data directory for `mwa train`.

Input shapes, detected in this order (--format forces one): (1) captions.csv / .tsv / .jsonl at the folder
root (columns image + caption, optional label, split, lang); (2) a.jpg + a.txt sidecar files, one caption per
line; (3) class folders photos/<label>/*.jpg with captions from templates (--lang, --templates).

Writes manifest.csv, dataset.json, rejected.csv (every file or row not used, with the reason),
data_report.json and an image cache at --image-size. Re-running on an unchanged folder reuses the cache.

Exit codes: 0 done (rejections, if any, are listed in rejected.csv); 2 invalid option; 3 unusable input (no
photos, no usable image-caption pair, unreadable captions table); 4 --strict and some file or row was
rejected (no dataset written); 10 a full disk; 11 an --out that cannot be written; 12 out of memory; 1 unexpected
internal error; 130 interrupted.

Examples:

  mwa prepare photos --out data

  mwa prepare photos --format folders --label-text ng="a part with a crack" --label-text ng="ひび割れのある部品"

  mwa prepare photos --format folders --label-map labels.csv   (columns label,en,ja)
"""


def rejected_examples(rejected, reason: str, k: int = 3) -> str:  # noqa: ANN001 - a pandas DataFrame
    """The files (and table rows) behind one grouped reason of the summary, e.g. 'a.jpg (row 3), b.jpg (row 9)
    and 4 more': the summary groups reasons with the names taken out, so it names them here."""
    import re

    grouped = rejected["reason"].astype(str).str.replace(r"'[^']*'", "'…'", regex=True)
    rows = rejected[grouped == reason]
    names = []
    for _, r in rows.head(k).iterrows():
        row = str(r.get("row", "")).strip()
        names.append(str(r["path"]) + (f" (row {re.sub(r'[.]0$', '', row)})" if row and row != "nan" else ""))
    more = len(rows) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _print_summary(res) -> None:  # noqa: ANN001
    c, rep = res.counts, res.report
    f, r = c["files"], c["rows"]
    console.print(f"[bold green]prepared[/] {shown(res.out_dir)}  ([dim]{res.format} format, {res.seconds:.1f} s, "
                  f"{res.decoded} decoded, {res.reused} from cache[/])", highlight=False)
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    t.add_column("split")
    t.add_column("images", justify="right")
    t.add_column("captions", justify="right")
    t.add_column("labels")
    for s in ("train", "val", "test"):
        labs = ", ".join(f"{k} {v}" for k, v in rep["labels_per_split"][s].items())
        t.add_row(s, str(c["by_split"][s]["images"]), str(c["by_split"][s]["captions"]),
                  shown(labs if len(labs) < 70 else labs[:67] + "..."))
    t.add_row("[bold]total", f"[bold]{c['images']}", f"[bold]{c['captions']}", "")
    console.print(t)
    cpi, cl = rep["captions_per_image"], rep["caption_length_chars"]
    console.print(f"captions per image: {cpi['min']}–{cpi['max']} (mean {cpi['mean']}); caption length "
                  f"{cl['min']}–{cl['max']} characters (median {cl['median']:g})", highlight=False)
    dup = rep["duplicates_merged"]
    if dup["images"] or dup["captions"]:
        console.print(f"duplicates merged: {dup['images']} image file(s), {dup['captions']} caption(s)")
    files_line = (f"files: {f['found']} found = {f['used']} used + {f['rejected']} rejected")
    if r["found"]:
        files_line += (f"; caption rows: {r['found']} found = {r['used']} used + {r['duplicates_merged']} duplicate"
                       f" + {r['rejected']} rejected" + (f" + {r['excluded_by_lang']} other language" if r['excluded_by_lang'] else ""))
    console.print(files_line, highlight=False)
    if c["rejected"]:
        console.print(f"[yellow]{c['rejected']} rejected[/] (every one with its reason in "
                      f"{shown(res.out_dir / 'rejected.csv')}):", highlight=False)
        for reason, n in list(rep["rejected_by_reason"].items())[:6]:
            console.print(f"  {n:>5} × {shown(reason)}: {shown(rejected_examples(res.rejected, reason))}",
                          highlight=False)
    tok = rep["tokenizer_coverage"]
    if tok["status"] == "ok":
        from mwa_cli.data.stats import coverage_line

        line, severity = coverage_line(tok)
        style = {"bad": "red", "some": "yellow", "ok": "green"}[severity]
        console.print(f"tokenizer coverage ({shown(Path(tok['tokenizer']).name)}): [{style}]{shown(line)}[/]",
                      highlight=False)
        if tok["unknown_tokens"]:
            console.print("  [yellow]the model cannot read these characters: `mwa train --extend-vocab auto` "
                          "(the default) gives them new token ids when more than 2 % of the tokens are unknown[/]")
    else:
        console.print(f"tokenizer coverage: skipped ({tok['reason']})", highlight=False)
    for note in res.notes:
        if note.startswith("warning:"):
            err_console.print(f"[yellow]{shown(note)}[/]", highlight=False)
        else:
            console.print(f"[dim]note:[/] {shown(note)}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("prepare", help=HELP)
    @guarded
    def prepare(
        photos_dir: Path = typer.Argument(..., help="Folder with the photos (and captions table or .txt files)."),
        out: Path = typer.Option(Path("data"), "--out", "-o", help="Data directory to write."),
        format: str = typer.Option("auto", "--format", help="auto | table | sidecar | folders."),
        lang: str = typer.Option("both", "--lang", help="en | ja | both: template captions for class folders; "
                                 "for tables with a lang column, which rows to keep."),
        split: str = typer.Option("0.8,0.1,0.1", "--split", help="train,val,test shares (a table's split column wins)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the train/val/test split."),
        image_size: int = typer.Option(224, "--image-size", help="Side of the square image cache (224 for BEiT-3)."),
        max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels",
                                       help="Refuse images with more pixels (decompression-bomb guard)."),
        strict: bool = typer.Option(False, "--strict", help="Exit 4 and write no dataset if anything is rejected."),
        templates: Optional[Path] = typer.Option(None, "--templates", help="Your own caption template file ({label})."),
        label_text: Optional[List[str]] = typer.Option(None, "--label-text",
                                                       help='Class folders: describe a label for the templates, '
                                                            'LABEL="phrase" (repeatable; a Japanese phrase is used '
                                                            'by the Japanese templates), e.g. ng="a cracked part".'),
        label_map: Optional[Path] = typer.Option(None, "--label-map",
                                                 help="Class folders: a file of label descriptions: CSV/TSV with "
                                                      "columns label,en,ja, or JSON {label: {en, ja}}."),
        tokenizer: Optional[Path] = typer.Option(None, "--tokenizer",
                                                 help="SentencePiece model for the coverage check (e.g. beit3.spm)."),
        workers: int = typer.Option(0, "--workers", help="Decoding processes (0 = all cores)."),
        json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout only."),
        force: bool = typer.Option(False, "--force", help="Replace the data directory in --out even though it was "
                                   "prepared from another photos folder."),
    ) -> None:
        from mwa_cli.commands.progress import count_bar
        from mwa_cli.data.label_text import load_label_map, merge_label_texts, parse_label_text_items
        from mwa_cli.data.prepare import prepare_dataset

        label_texts = merge_label_texts(load_label_map(label_map) if label_map else None,
                                        parse_label_text_items(label_text))
        with count_bar("decoding photos", err_console.is_terminal) as progress:
            res = prepare_dataset(photos_dir, out, fmt=format, lang=lang, split=split, seed=seed,
                                  image_size=image_size, max_pixels=max_pixels, strict=strict,
                                  progress=progress, templates=templates, tokenizer=tokenizer,
                                  label_texts=label_texts or None,
                                  workers=workers or None, force=force)
        if json_out:
            emit_json(res.summary())
        else:
            _print_summary(res)
