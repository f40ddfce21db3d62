"""`mwa index`: thin Typer wrapper around mwa_cli.search.build.build_index."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mwa_cli.commands.common import (
    DeviceOption,
    RunTokenizerOption,
    RunWeightsOption,
    SummaryJsonOption,
    console,
    emit_json,
    guarded,
)

HELP = """Embed every photo of a folder with a trained adapter, for `mwa search`.

Same ingestion rules as `mwa prepare` (hidden files skipped, links leaving the folder refused, broken photos
listed in rejected.csv with the reason). Re-running on the same folder embeds only new or changed photos and drops
removed ones. An index is tied to its adapter and backbone: another adapter is refused. --model EXPORT_DIR
embeds with an `mwa export` folder (onnxruntime) instead of a run. --approx also builds an approximate index with
faiss (IVF-Flat; IVF-SQ8 from 100,000 photos; IVF-PQ when those would not fit in memory) for `mwa search
--nprobe N` (worth it from about a million photos); later re-runs add new photos to it without rebuilding.

Examples:

  mwa index ./photos --adapter runs/mwa-beit3-base-20260101-120000 --out photos_index

  mwa index ./photos --adapter runs/my-run --out photos_index --captions data   (also embed data's captions)

  mwa index ./photos --adapter runs/my-run --out photos_index --approx   (then: mwa search ... --nprobe 16)

  mwa index ./photos --model line3_model --out photos_index   (an `mwa export` folder: no PyTorch model)

  mwa index ./photos --line line-3   (the current version of a production line, into its version folder of the
  line store; later: `mwa index --line line-3` indexes the same photos for the line's new current version)
"""


def register(app: typer.Typer) -> None:
    @app.command("index", help=HELP)
    @guarded
    def index_cmd(
        photos: Optional[Path] = typer.Argument(None, help="Folder of photos to index (searched recursively) "
                                                "\\[with --line: the photos of the line's last index]."),
        adapter: Optional[Path] = typer.Option(None, "--adapter", help="Run folder (or adapter folder) of "
                                               "`mwa train`."),
        model: Optional[Path] = typer.Option(None, "--model", help="Instead of --adapter: a folder written by "
                                             "`mwa export` (onnxruntime, no PyTorch model)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Index folder \\[default: RUN_DIR/index_<photos>]."),
        captions: Optional[Path] = typer.Option(None, "--captions", help="Data dir of `mwa prepare` whose "
                                                "captions are embedded too (for photo → caption search)."),
        weights: RunWeightsOption = None,
        tokenizer: RunTokenizerOption = None,
        device: DeviceOption = "auto",
        batch_size: int = typer.Option(64, "--batch-size", help="Embedding batch size."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Decode processes \\[default: CPU cores]."),
        rebuild: bool = typer.Option(False, "--rebuild", help="Discard an existing index in --out and start over."),
        approx: bool = typer.Option(False, "--approx", help="Also build the approximate (IVF) index used by "
                                    "`mwa search --nprobe`."),
        approx_kind: Optional[str] = typer.Option(None, "--approx-kind", help="auto | ivf-flat | ivf-fastscan | ivf-sq8 | "
                                                  "ivf-pq \\[default: auto: IVF-Flat below 100,000 photos, else "
                                                  "IVF-FastScan]; with --approx."),
        nlist: Optional[int] = typer.Option(None, "--nlist", help="Lists of the approximate index "
                                            "\\[default: about 2·√photos]; with --approx."),
        line: Optional[str] = typer.Option(None, "--line", help="Index for the current version of this "
                                           "production line (`mwa line`) instead of --adapter / --model / --out."),
        store: Path = typer.Option(Path("lines"), "--store", help="The line store of --line."),
        json_out: SummaryJsonOption = False,
    ) -> None:
        from mwa_cli.commands.progress import count_bar
        from mwa_cli.search.build import build_index

        options = dict(device=device, batch_size=batch_size, workers=workers, rebuild=rebuild, approx=approx,
                       nlist=nlist, approx_kind=approx_kind)
        with count_bar("indexing photos", not json_out) as progress:
            if line is not None:
                from mwa_cli.lines.index import index_line

                _line_only(adapter, model, out, weights, tokenizer)
                summary = index_line(store, line, photos, captions=captions, progress=progress, **options)
            else:
                summary = build_index(_photos(photos), _one_model(adapter, model), out, captions_dir=captions,
                                      weights=weights, tokenizer=tokenizer, progress=progress, **options)
        if json_out:
            emit_json(summary)
            return
        from rich.markup import escape

        c = summary["counts"]
        if summary.get("line"):
            console.print(f"[bold]line[/] {escape(summary['line']['name'])} v{summary['line']['version']}",
                          highlight=False)
        console.print(f"[bold]index[/] {escape(summary['index'])}: {c['images']} images from "
                      f"{c['files_indexed']} files ({summary['method']} · {summary['backbone']})", highlight=False)
        console.print(f"  embedded {c['embedded']} · reused {c['reused']} · removed {c['removed']} · "
                      f"duplicates merged {c['duplicates_merged']} · rejected {c['rejected']}", highlight=False)
        if c["captions"]:
            console.print(f"  captions: {c['captions']} ({c['captions_embedded']} embedded now)", highlight=False)
        if summary.get("approx"):
            a = summary["approx"]
            console.print(f"  approximate index: faiss {a['kind']}, {a['nlist']} lists ({a['how']} in "
                          f"{a['seconds']:.1f} s)", highlight=False)
        rate = f" · {summary['images_per_s']:.1f} photos/s" if summary.get("images_per_s") else ""
        console.print(f"  {summary['seconds']:.1f} s{rate}", highlight=False)
        if c["rejected"]:
            console.print(f"  [yellow]{c['rejected']} file(s) not indexed[/]: see {escape(summary['rejected_csv'])}",
                          highlight=False)
        console.print(f'  next: mwa search "a scratch near the edge" --index {escape(summary["index"])}',
                      highlight=False)


def _photos(photos: Optional[Path]) -> Path:
    from mwa_cli.errors import ConfigError

    if photos is None:
        raise ConfigError("say which photos to index", hint="e.g. mwa index ./photos --adapter runs/my-run")
    return photos


def _line_only(*given: object) -> None:
    """--line picks the model (the line's current version) and the folder (in the line store) itself."""
    from mwa_cli.errors import ConfigError

    if any(g is not None for g in given):
        raise ConfigError("--adapter, --model, --out, --weights and --tokenizer do not apply to --line: the line's "
                          "current version and its record give them",
                          hint="e.g. mwa index ./photos --line line-3 --store lines")


def _one_model(adapter: Optional[Path], model: Optional[Path]) -> Path:
    """The model that embeds: a run folder (--adapter) or an export folder (--model), exactly one of them."""
    from mwa_cli.errors import ConfigError

    if (adapter is None) == (model is None):
        raise ConfigError("give exactly one of --adapter RUN_DIR and --model EXPORT_DIR",
                          hint="e.g. mwa index ./photos --adapter runs/my-run --out photos_index")
    if model is not None:
        from mwa_cli.export.manifest import read_manifest

        read_manifest(model)  # a clear error for a folder that is not an export
        return model
    assert adapter is not None
    return adapter
