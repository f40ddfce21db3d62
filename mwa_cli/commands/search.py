"""`mwa search`: thin Typer wrapper around mwa_cli.search.run.search_index."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mwa_cli.commands.common import DeviceOption, console, emit_json, err_console, guarded

HELP = """Find the photos closest to a description, or to a photo, in an index made by `mwa index`.

A photo query (--image) also lists the nearest captions when the index holds a caption set (`mwa index
--captions DATA_DIR`). Scores are cosine similarities (higher is closer). Exact search over every indexed photo
by default; --nprobe N uses the approximate index of `mwa index --approx` instead (faster on millions of photos,
may miss some matches; the JSON's "search" says which ran).

Examples:

  mwa search "crack near the weld" --index photos_index

  mwa search "右上に傷" --index photos_index --top 20 --html results.html   (with why-this-match heat maps)

  mwa search --image query.jpg --index photos_index --json

  mwa search "crack near the weld" --index photos_index --nprobe 16   (needs `mwa index ... --approx`)

  mwa search "crack near the weld" --index photos_index --model line3_model   (onnxruntime, from `mwa export`)
"""


def register(app: typer.Typer) -> None:
    @app.command("search", help=HELP)
    @guarded
    def search_cmd(
        text: Optional[str] = typer.Argument(None, help="What to look for, in words."),
        index: Path = typer.Option(..., "--index", help="Index folder written by `mwa index`."),
        image: Optional[Path] = typer.Option(None, "--image", help="Search with this photo instead of words."),
        top: int = typer.Option(10, "--top", help="How many results."),
        nprobe: Optional[int] = typer.Option(None, "--nprobe", help="Approximate search: visit the N closest "
                                             "lists of the index's faiss IVF (`mwa index --approx`) \\[default: exact]."),
        html: Optional[Path] = typer.Option(None, "--html", help="Also write the results as one HTML file "
                                            "(with why-this-match heat maps for a text query)."),
        heatmap: bool = typer.Option(False, "--heatmap", help="Why this match? Add an occlusion heat map to the "
                                     "first 8 photos of a text query (JSON: `heat`)."),
        adapter: Optional[Path] = typer.Option(None, "--adapter", help="Run folder \\[default: the one that built "
                                               "the index]; another adapter is refused."),
        model: Optional[Path] = typer.Option(None, "--model", help="A folder written by `mwa export` to embed "
                                             "the query with (onnxruntime) \\[default: the one that built the "
                                             "index, if an export did]."),
        weights: Optional[str] = typer.Option(None, "--weights", help="Backbone weights \\[default: the index's]."),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Sentencepiece model \\[default: the index's]."),
        device: DeviceOption = "auto",
        json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout only."),
    ) -> None:
        from mwa_cli.search.run import search_index

        result = search_index(index, text, image=image, top=top, nprobe=nprobe, html=html, heatmap=heatmap,
                              adapter=adapter, model=model, weights=weights, tokenizer=tokenizer, device=device)
        if json_out:
            emit_json(result)
            return
        _print(result)


def _print(result: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    q = result["query"]
    title = f'"{_short(q["text"])}"' if q["kind"] == "text" else q["path"]
    for w in result.get("warnings") or []:
        err_console.print(Text("warning: " + w, style="yellow"))
    table = Table(title=Text(f"{title} · top {len(result['images'])} of {result['n_images']} photos"),
                  title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("photo", overflow="fold")
    for hit in result["images"]:
        name = hit["path"] + (f"  (+{len(hit['duplicates'])} copies)" if hit["duplicates"] else "")
        table.add_row(str(hit["rank"]), f"{hit['score']:.3f}", Text(name))
    console.print(table)
    if result.get("captions"):
        ct = Table(title=Text("nearest captions"), title_justify="left")
        ct.add_column("#", justify="right")
        ct.add_column("score", justify="right")
        ct.add_column("caption", overflow="fold")
        ct.add_column("label")
        for c in result["captions"]:
            ct.add_row(str(c["rank"]), f"{c['score']:.3f}", Text(c["caption"]), Text(c["label"]))
        console.print(ct)
    t = result["timing_ms"]
    how = result.get("search") or {"method": "exact"}
    kind = "exact" if how["method"] == "exact" else \
        f"approximate {how['method']}, nprobe {how['nprobe']} of {how['nlist']} lists"
    console.print(Text(f"encode {t['encode']:.1f} ms · search {t['search']:.1f} ms ({kind})"
                       + (f" · written to {result['html']}" if result.get("html") else ""), style="dim"))


def _short(text: str, limit: int = 60) -> str:
    """A query as echoed on the terminal: one line, long ones shortened (the JSON keeps the whole text)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else f"{flat[:limit - 1]}… ({len(text):,} characters)"
