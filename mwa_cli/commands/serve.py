"""`mwa serve`: thin Typer wrapper that opens the index and runs mwa_cli.serve.app under Uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mwa_cli.commands.common import console, guarded

HELP = """Serve an index as a local web app: a search box (English or Japanese), results as a photo grid with
caption, score and why-this-match heat map; click a photo to see similar photos and the closest captions.
A JSON API sits beside it (/api/search?q=..., /api/photo/ID, /api/status). Read-only; binds to 127.0.0.1
(this PC only) unless --host says otherwise. Photos added with `mwa index` to the same index appear without
a restart.

Examples:

  mwa serve --index photos_index

  mwa serve --index photos_index --model line3_model        (an `mwa export` folder: no PyTorch model)

  mwa serve --index photos_index --host 0.0.0.0 --port 8080  (other PCs on the network may connect)

  mwa serve --lines lines   (every production line of a line store: one backbone in memory, each line's current
  adapter version with its own index, chosen per request with ?line=NAME; a publish or rollback is taken up
  without a restart once the new version is indexed)
"""


def register(app: typer.Typer) -> None:
    @app.command("serve", help=HELP)
    @guarded
    def serve_cmd(
        index: Optional[Path] = typer.Option(None, "--index", help="Index folder written by `mwa index`."),
        lines: Optional[Path] = typer.Option(None, "--lines", help="Instead of --index: a line store (`mwa line "
                                             "add`); every line served side by side."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this PC only)."),
        port: int = typer.Option(8765, "--port", help="Port to listen on."),
        adapter: Optional[Path] = typer.Option(None, "--adapter", help="Run folder \\[default: the one that built "
                                               "the index]; another adapter is refused."),
        model: Optional[Path] = typer.Option(None, "--model", help="A folder written by `mwa export` "
                                             "(onnxruntime) \\[default: the one that built the index]."),
        device: str = typer.Option("auto", "--device", help="auto | cuda | cpu (PyTorch models)."),
        heatmaps: bool = typer.Option(True, "--heatmaps/--no-heatmaps", help="Why-this-match heat maps on the "
                                      "results page (about one extra forward pass per shown photo)."),
    ) -> None:
        from mwa_cli.serve.run import serve

        serve(index, lines=lines, host=host, port=port, adapter=adapter, model=model, device=device,
              heatmaps=heatmaps,
              announce=lambda url: console.print(f"[bold]mwa serve[/]: {url}  (Ctrl-C stops)", highlight=False))
