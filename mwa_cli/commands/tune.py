"""`mwa tune`: thin Typer wrapper around mwa_cli.tune.search.run_tune (options → TuneSettings → Rich progress)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mwa_cli.adapters.registry import names as method_names  # torch-free: the help lists every method
from mwa_cli.commands.common import (
    EXTRA_ARGS,
    TokenizerOption,
    choices,
    console,
    emit_json,
    err_console,
    guarded,
    refuse_extra_args,
)
from mwa_cli.commands.progress import EtaColumn, budget_text
from mwa_cli.errors import EXIT_SIGINT
from mwa_cli.tune.settings import PRUNERS  # torch-free, as every module the command line imports at start

Pruner = choices("Pruner", PRUNERS)

HELP = (
    "Find the fastest training configuration that keeps the recall, on your own val split, within one wall-clock "
    "budget.\n\n"
    "Searches the options that trade time for recall (adapted layers: all or the top K; the feature cache; AE "
    "width; NKE rank; learning rate; batch size; for full-ft the learning rate, layer decay and batch size) with "
    "Optuna: a seeded TPE sampler, the defaults tried first, and successive halving, which stops a trial that is "
    "behind the others at the same time spent. Every trial is a real `mwa train` run folder under "
    "<out>/<name>/trials/, evaluated on the val split (the test split stays untouched).\n\n"
    "It recommends the fastest trial whose best val RSUM (primary protocol) is within --tolerance of the best: "
    "fastest = the least time (wall time without validation checks) to reach --share of the best val RSUM. The "
    "recommendation is written as recommended-<method>.toml, which `mwa train --config` reads, and the page "
    "tune.html shows every trial's val curve with the chosen one marked.\n\n"
    "Examples:\n\n"
    "  mwa tune data --method mwa --budget 30m\n\n"
    "  mwa tune data --method mwa --compare full-ft --budget 1h     (both tuned, the budget split evenly)\n\n"
    "  mwa tune data --method full-ft --budget 30m --backbone beit3-base --weights beit3_base_itc_patch16_224.pth\n\n"
    "  mwa tune data --method mwa --trials 12 --trial-budget 3m\n\n"
    "  mwa tune data --method mwa --budget 30m --tolerance 0.02     (again, after it ran: a new recommendation, "
    "no new trials)\n\n"
    "Ctrl-C or SIGTERM: the running trial saves its checkpoint; run the same command again to continue (finished "
    "trials are kept, the interrupted one resumes). Exit codes: 0 done; 2 invalid option; 3 unusable data; 1 a "
    "trial of the default configuration failed, or several trials in a row; 130 / 143 interrupted."
)


def register(app: typer.Typer) -> None:
    @app.command("tune", help=HELP, context_settings=EXTRA_ARGS)
    @guarded
    def tune_cmd(
        ctx: typer.Context,
        data_dir: Path = typer.Argument(..., help="Prepared data directory (from `mwa prepare`), with a val split."),
        method: str = typer.Option("mwa", "--method", "-m", help=f"The method to tune: "
                                   f"{' | '.join(m for m in method_names() if m != 'frozen')}."),
        compare: Optional[str] = typer.Option(None, "--compare", help="Tune this baseline too (e.g. full-ft), with "
                                              "the same share of the budget: the report then compares two tuned "
                                              "methods."),
        budget: Optional[str] = typer.Option(None, "--budget", help="Wall-clock budget of the whole tune (30m, 2h, "
                                             "1h30m), split evenly between the methods."),
        trial_budget: Optional[str] = typer.Option(None, "--trial-budget", help="Each trial's `mwa train --budget` "
                                                   "\\[default: a method's budget / 6]."),
        trial_steps: Optional[int] = typer.Option(None, "--trial-steps", help="Each trial's `mwa train --steps`, "
                                                  "instead of a trial budget."),
        trials: Optional[int] = typer.Option(None, "--trials", help="At most this many trials per method."),
        tolerance: float = typer.Option(0.01, "--tolerance", help="Share of the best val RSUM the recommendation "
                                        "may lose (0.01: 1 %)."),
        share: float = typer.Option(0.95, "--share", help="Speed is the time to reach this share of the best val "
                                    "RSUM."),
        pruner: Pruner = typer.Option("halving", "--pruner", help="halving (successive halving) | hyperband | none."),
        backbone: str = typer.Option("beit3-base", "--backbone", "-b", help="As `mwa train --backbone`."),
        weights: Optional[str] = typer.Option(None, "--weights", help="As `mwa train --weights`."),
        tokenizer: TokenizerOption = None,
        device: str = typer.Option("auto", "--device", help="auto | cuda | cpu."),
        seed: int = typer.Option(0, "--seed", help="Seed of the trials and of the sampler."),
        compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile every trial (GPU)."),
        val_share: float = typer.Option(0.1, "--val-share", help="Most of a trial's wall time its val checks may "
                                        "take (the pruner and the curves need checks)."),
        config: Optional[Path] = typer.Option(None, "--config", help="`mwa train` config file with fixed options "
                                              "for every trial (not those the tune chooses)."),
        out: str = typer.Option("runs", "--out", help="Folder of runs; the tune is written to <out>/<name>/."),
        name: Optional[str] = typer.Option(None, "--name", help="Tune name \\[default: tune-<methods>-<backbone>, "
                                           "so the same command continues the same tune]."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary (and errors)."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout only."),
    ) -> None:
        refuse_extra_args(ctx.args, "--budget", budget, data_dir.name)
        from mwa_cli.tune.search import run_tune
        from mwa_cli.tune.settings import TuneSettings

        settings = TuneSettings(
            data_dir=str(data_dir), methods=(method,) + ((compare,) if compare else ()), backbone=backbone,
            weights=weights, tokenizer=tokenizer, device=device, seed=seed, budget=budget, trial_budget=trial_budget,
            trial_steps=trial_steps, max_trials=trials, tolerance=tolerance, share=share, pruner=pruner.value,
            compile=compile, val_share=val_share, base_config=str(config) if config else None, out=out, name=name)
        display = TuneProgress(quiet or json_out)
        try:
            with display:
                result = run_tune(settings, display)
        except KeyboardInterrupt:  # a second Ctrl-C: the trial stopped at once, its last checkpoint kept
            err_console.print("[yellow]stopped at once (second Ctrl-C): finished trials are kept, the interrupted "
                              "one continues from its last checkpoint[/]", highlight=False)
            err_console.print("[yellow]hint:[/] run the same `mwa tune` command again to continue", highlight=False)
            raise typer.Exit(EXIT_SIGINT) from None
        if json_out:
            emit_json(result.to_dict())
            return
        print_summary(result)


class TuneProgress:
    """Trial by trial: a line when one starts, a bar while it trains (steps, ETA, its val checks), a line when it
    ends (stderr: stdout stays clean for --json)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), EtaColumn(), TextColumn("{task.fields[info]}"), console=err_console)
        self.task: Any = None
        self.live = False

    def __enter__(self) -> "TuneProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.bar.stop()
            self.live = False

    def say(self, text: str) -> None:
        if not self.quiet:
            (self.bar.console if self.live else err_console).print(text, highlight=False)

    def __call__(self, event: str, data: dict) -> None:
        if event == "message" and str(data.get("text", "")).startswith("warning:"):
            self.say(f"    [yellow]{escape(data['text'])}[/]")
        elif event == "tune_method":
            self.say(_method_line(data))
        elif event == "trial":
            self.say(f"[bold]{data['name']}[/] {escape(data['describe'])}"
                     + (" [dim](continuing the interrupted trial)[/]" if data["resumed"] else ""))
            if not self.quiet:
                if not self.live:
                    self.bar.start()
                    self.live = True
                self.task = self.bar.add_task(data["name"], total=None, info="starting", first=None, deadline=None,
                                              done=False)
        elif event == "trial_done":
            if self.task is not None:
                self.bar.update(self.task, done=True, info=data["state"])
                self.bar.remove_task(self.task)
                self.task = None
            self.say("    " + _done_line(data))
        elif event == "tune_stop":
            self.say(f"[bold]{data['method']}[/]: search ended: {escape(data['reason'])}")
        elif self.task is not None:
            self._train_event(event, data)

    def _train_event(self, event: str, data: dict) -> None:
        if event == "setup":
            left = data.get("budget_left_s")
            self.bar.update(self.task, total=data.get("total_steps"), info="warming up",
                            deadline=None if left is None else time.monotonic() + left)
        elif event == "plan":
            self.bar.update(self.task, total=data["total_steps"])
        elif event == "step":
            task = next(t for t in self.bar.tasks if t.id == self.task)
            first = task.fields.get("first") or (time.monotonic(), int(data["step"]))
            self.bar.update(self.task, completed=data["step"], total=data.get("total_steps"), first=first)
        elif event == "validation" and data["step"] > 0:
            self.bar.update(self.task, info=f"val RSUM {data['val_primary']:.1f} at {data['elapsed_s']:.0f} s")


def _method_line(data: dict) -> str:
    length = data["trial_length"]
    each = budget_text(length["budget_s"]) if "budget_s" in length else f"{length['steps']} steps"
    budget = (f"budget {budget_text(data['budget_s'])} ({budget_text(data['spent_s'])} spent)"
              if data.get("budget_s") else "no budget: --trials only")
    more = f", {data['trials']} trials so far" if data["trials"] else ""
    return f"[bold]tuning {data['method']}[/]: {budget}, each trial {each}{more} · {escape(data['folder'])}"


def _done_line(data: dict) -> str:
    took = budget_text(data["seconds"])
    if data["state"] == "failed":
        return f"[red]failed[/] after {took}: {escape(str(data['error']))}"
    best = "–" if data["value"] is None else f"{data['value']:.2f}"
    word = "[blue]pruned[/]" if data["state"] == "pruned" else "[green]done[/]"
    return f"{word} in {took}: best val RSUM {best}"


def summary_table(method_result) -> Table:
    """The trials of one method in 80 columns: → the recommended one, * the best."""
    from mwa_cli.tune.summary import rows

    rec = method_result.recommendation
    pct = f"{100 * rec.share:g}%"
    table = Table(box=None, padding=(0, 1), collapse_padding=True, pad_edge=False, show_edge=False,
                  title=f"{method_result.method}: {len(method_result.records)} trials", title_justify="left")
    for header, kw in (("trial", dict(no_wrap=True, min_width=13)), ("state", dict(no_wrap=True)),
                       ("configuration", dict(no_wrap=True, overflow="ellipsis", max_width=27)),
                       ("val", dict(justify="right")), (f"to {pct}", dict(justify="right")),
                       ("wall", dict(justify="right")), ("curve", dict(no_wrap=True))):
        table.add_column(header, **kw)
    for row in rows(method_result.records, rec):
        style = "bold" if row["mark"] == "→" else None
        table.add_row(f"{row['mark'] or ' '}{row['trial']}", row["state"], escape(row["config"]), row["best"],
                      row["to_target"], row["wall"], row["curve"], style=style)
    return table


def print_summary(result) -> None:
    for m in result.methods:
        rec = m.recommendation
        console.print(summary_table(m))
        console.print(f"[bold]{m.method}[/]: {escape(rec.reason)}", highlight=False)
        for note in rec.notes:
            console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
        if m.config_path is not None:
            console.print(f"  config: {escape(str(m.config_path))}", highlight=False, soft_wrap=True)
            console.print(f"  train it: [cyan]{escape(m.command)}[/]", highlight=False, soft_wrap=True)
        console.print()
    if len(result.methods) > 1:
        console.print("Both methods were tuned with the same budget: train both recommended configurations, then "
                      "`mwa report --runs runs` compares two tuned methods.", highlight=False)
    console.print(f"tune page: {escape(str(result.page))}", highlight=False, soft_wrap=True)
