"""`mwa eval`: thin Typer wrapper around mwa_cli.eval.evaluate.evaluate_path."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mwa_cli.commands.common import DeviceOption, TokenizerOption, console, emit_json, guarded

HELP = (
    'Retrieval metrics of a trained run, an adapter, or the zero-shot backbone, on one split.\n'
    '\n'
    'Image→text and text→image R@1/5/10, median rank, RSUM (sum of the six recalls) and mean recall, per '
    'label when the data has labels. An image query hits at K if ANY of its captions is in the top K; '
    'every caption is a text query. Writes eval.json and eval_topk.json into the run (or adapter) folder '
    '(another split than the run\'s own: eval_<split>.json). A run is evaluated with the precision and batch '
    'size of its own final evaluation, from its published adapter: on the same kind of device the numbers '
    'equal those `mwa train` wrote.\n'
    '\n'
    'Examples:\n'
    '\n'
    '  mwa eval runs/mwa-beit3-base-20260101-120000\n'
    '\n'
    '  mwa eval runs/my-run --split val --json\n'
    '\n'
    '  mwa eval path/to/adapter_config.json --data data\n'
    '\n'
    '  mwa eval data --method frozen --backbone beit3-mini        (zero-shot backbone, nothing written)\n'
    ''
)


def register(app: typer.Typer) -> None:
    @app.command("eval", help=HELP)
    @guarded
    def eval_cmd(
        target: Optional[Path] = typer.Argument(None, help="Run folder, adapter folder/file, or (with --method "
                                                "frozen) the data dir."),
        data: Optional[Path] = typer.Option(None, "--data", help="Data dir \\[default: the run's data dir]."),
        split: str = typer.Option("test", "--split", help="test | val."),
        method: Optional[str] = typer.Option(None, "--method", help="'frozen': evaluate --backbone zero-shot."),
        backbone: Optional[str] = typer.Option(None, "--backbone", help="Backbone for --method frozen."),
        weights: Optional[str] = typer.Option(None, "--weights", help="Backbone weights (path or URL)."),
        tokenizer: TokenizerOption = None,
        device: DeviceOption = "auto",
        precision: Optional[str] = typer.Option(None, "--precision",
                                                help="auto | bf16 | fp16 | fp32 \\[default: the run's own on the "
                                                     "same kind of device, else auto]."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size",
                                                 help="Embedding batch size \\[default: the run's own, else 128]."),
        json_out: bool = typer.Option(False, "--json", help="Print eval.json on stdout only."),
    ) -> None:
        from mwa_cli.errors import ConfigError
        from mwa_cli.eval.evaluate import evaluate_path

        if split not in ("test", "val"):
            raise ConfigError(f"unknown split {split!r}", hint="use --split test or --split val")
        if method not in (None, "frozen"):
            raise ConfigError("--method only takes 'frozen' here (a run or adapter knows its own method)")
        if method == "frozen" and not backbone:
            raise ConfigError("--method frozen needs --backbone", hint="e.g. --backbone beit3-mini")
        result = evaluate_path(target, data_dir=data, split=split, device=device, precision=precision,
                               batch_size=batch_size, tokenizer=tokenizer, backbone=backbone, weights=weights,
                               method=method)
        if json_out:
            emit_json(result)
            return
        from mwa_cli.eval.small_split import fmt_recalls, trivial_recalls, trivial_sentence

        i2t, t2i = result["i2t"], result["t2i"]
        trivial = trivial_recalls(result)
        console.print(f"[bold]{result.get('method')}[/] · {result.get('backbone')} · {result['split']}: "
                      f"{result['n_images']} images, {result['n_captions']} captions", highlight=False)
        console.print(f"  image→text R@1/5/10 {fmt_recalls(i2t, trivial['i2t'])} "
                      f"(median rank {i2t['median_rank']:g})", highlight=False)
        console.print(f"  text→image R@1/5/10 {fmt_recalls(t2i, trivial['t2i'])} "
                      f"(median rank {t2i['median_rank']:g})", highlight=False)
        if note := trivial_sentence(result, result["split"]):
            console.print(f"  [yellow]{note}[/]", highlight=False)
        console.print(f"  RSUM {result['rsum']:.2f} · mean recall {result['mean_recall']:.2f}", highlight=False)
        for label, m in (result.get("per_label") or {}).items():
            console.print(f"    {label}: RSUM {m['rsum']:.2f} ({m['n_images']} images)", highlight=False)
        from mwa_cli.eval.label_level import summary_lines

        for line in summary_lines(result, per_label=True):
            console.print(f"  {line}", highlight=False)
        if result.get("written_to"):
            console.print(f"  written to {result['written_to']}", highlight=False)
