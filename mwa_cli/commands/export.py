"""`mwa export`: thin Typer wrapper around mwa_cli.export.onnx.export_onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mwa_cli.commands.common import RunTokenizerOption, RunWeightsOption, SummaryJsonOption, console, emit_json, guarded

HELP = """Export a trained run as ONNX files for PCs without PyTorch (onnxruntime on the CPU).

Writes image_encoder.onnx and text_encoder.onnx (backbone, adapter and head in one graph each, any batch size),
the tokenizer and export.json (run, dataset hash, adapter sha256, input size, normalisation, text length, opset,
versions). Before finishing, onnxruntime runs both graphs and their embeddings are compared with mwa's own
(cosine ≥ 0.9999, recorded in export.json). `mwa index` and `mwa search` take the folder with --model.

Examples:

  mwa export runs/mwa-beit3-base-20260101-120000 --format onnx --out line3_model

  mwa index ./photos --model line3_model --out photos_index

  mwa search "右上に傷" --index photos_index --model line3_model

  mwa export runs/lora-run --format peft --out line3_peft   (a LoRA run, for peft.PeftModel.from_pretrained)

--format peft writes adapter_config.json and adapter_model.safetensors in PEFT's layout. It exports LoRA runs
only: MWA's adapters and Alignment Enhancer, NKE and full fine-tuning have no PEFT form (docs/formats.md).
"""


def register(app: typer.Typer) -> None:
    @app.command("export", help=HELP)
    @guarded
    def export_cmd(
        run: Path = typer.Argument(..., help="Run folder (or adapter folder) of `mwa train`."),
        fmt: str = typer.Option("onnx", "--format", help="onnx (any method: graphs for onnxruntime) or peft (a LoRA "
                                "run as a folder PEFT loads)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Export folder \\[default: RUN_DIR/export_onnx or "
                                           "RUN_DIR/export_peft]."),
        weights: RunWeightsOption = None,
        tokenizer: RunTokenizerOption = None,
        opset: int = typer.Option(17, "--opset", help="ONNX opset (14 or later)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an export already in --out."),
        json_out: SummaryJsonOption = False,
    ) -> None:
        from mwa_cli.errors import ConfigError

        if fmt.lower() not in ("onnx", "peft"):
            raise ConfigError(f"unknown --format {fmt!r}", hint="choose onnx (any method) or peft (LoRA runs)")
        if fmt.lower() == "peft":
            from mwa_cli.export.peft import export_peft

            summary = export_peft(run, out, overwrite=overwrite)
            if json_out:
                emit_json(summary)
            else:
                console.print(f"[bold]exported[/] {summary['run']} (LoRA, {summary['target_modules']} modules) as "
                              f"a PEFT adapter to {summary['export']}", highlight=False, markup=False)
                console.print(f"  load it with peft.PeftModel.from_pretrained(base_model, {summary['export']!r})",
                              highlight=False, markup=False)
            return
        from mwa_cli.export.onnx import export_onnx

        with console.status("exporting and checking with onnxruntime", spinner="dots") if not json_out \
                else _nullcontext():
            summary = export_onnx(run, out, weights=weights, tokenizer=tokenizer, opset=opset, overwrite=overwrite)
        if json_out:
            emit_json(summary)
            return
        from rich.markup import escape

        mib = sum(summary["files"].values()) / 2**20
        console.print(f"[bold]exported[/] {escape(summary['run'])} ({summary['method']} · {summary['backbone']}) "
                      f"to {escape(summary['export'])}: {mib:.1f} MiB in {summary['seconds']:.1f} s", highlight=False)
        chk = summary.get("check")
        if chk:
            console.print(f"  onnxruntime vs mwa: cosine ≥ {min(chk['min_cosine_image'], chk['min_cosine_text']):.6f}"
                          " (image and text)", highlight=False)
        console.print(f"  next: mwa index PHOTOS_DIR --model {escape(summary['export'])} --out photos_index",
                      highlight=False)


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()
