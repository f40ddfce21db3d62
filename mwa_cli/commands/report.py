"""`mwa report`: compare runs with full fine-tuning (terminal summary, one self-contained HTML file, --json)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mwa_cli.commands.common import console, emit_json, err_console, guarded
from mwa_cli.errors import ConfigError

EPILOG = ("Examples:\n\n  mwa report --runs runs\n\n  mwa report runs/mwa-a runs/full-ft-a --compare full-ft\n\n"
          "  mwa report --runs runs --gpu-cost 0.04 --currency EUR     (a CPU run: the price of one CPU-hour)\n\n"
          "  mwa report --runs runs --explain     (adds a glossary: RSUM, R@K, the methods, the intervals)\n\n"
          "  mwa report --runs runs --estimate     (no full-ft run yet: its cost estimated from a few timed steps)\n\n"
          "  mwa report --runs runs --json > report.json")


def register(app: typer.Typer) -> None:
    @app.command("report", epilog=EPILOG)
    @guarded
    def report(
        run_dirs: Optional[List[Path]] = typer.Argument(None, help="Run folders (runs/<name>) to compare.",
                                                        show_default=False),
        runs: Optional[Path] = typer.Option(None, "--runs", help="Take every run folder inside this folder."),
        compare: str = typer.Option("full-ft", "--compare", help="Baseline: a method name or a run name."),
        gpu_cost: Optional[float] = typer.Option(None, "--gpu-cost", help="Assumed price of one device-hour: a "
                                                 "GPU-hour for GPU runs, a CPU-hour for CPU runs (the report marks it "
                                                 "as an assumption) \\[default: mwa settings, else 2.5]."),
        currency: Optional[str] = typer.Option(None, "--currency", help="Currency of --gpu-cost \\[default: mwa "
                                               "settings, else USD]."),
        lines: Optional[int] = typer.Option(None, "--lines", help="Production lines / product variants, one model "
                                            "each \\[default: mwa settings, else 10]."),
        retrains: Optional[int] = typer.Option(None, "--retrains-per-year", help="Retrains of each line's model "
                                               "per year \\[default: mwa settings, else 12]."),
        lang: Optional[str] = typer.Option(None, "--lang", help="Language of the report's own text: en or ja "
                                           "\\[default: mwa settings, else en]."),
        out: Optional[Path] = typer.Option(
            None, "--out", help="HTML file to write (default: report.html in the --runs folder, else in the "
                                "folder holding the run folders)."),
        as_json: bool = typer.Option(False, "--json", help="Print the report's figures as JSON on stdout."),
        explain: bool = typer.Option(False, "--explain", help="Add a glossary: RSUM, R@K, the methods, the "
                                     "intervals, what is measured and what is assumed."),
        target: int = typer.Option(95, "--target", help="Time to quality: the share (%) of full fine-tuning's best "
                                   "validation RSUM a run must reach; the ROI uses this time. 95 or 99."),
        estimate: bool = typer.Option(False, "--estimate", help="No full-FT run: measure its step time for a few "
                                      "steps here and extrapolate (marked 'estimated')."),
        estimate_steps: int = typer.Option(10, "--estimate-steps", help="Timed steps for --estimate."),
        data: Optional[Path] = typer.Option(None, "--data", help="Data dir for the gallery (default: the runs' "
                                            "config.json data_dir)."),
        zero_shot: bool = typer.Option(True, "--zero-shot/--no-zero-shot", help="Evaluate the untrained backbone on "
                                       "the test split when no frozen run and no cached figures have it (once per "
                                       "data set: cached in the data dir's cache/zero_shot/)."),
    ) -> None:
        """Compare methods with full fine-tuning: recall, training cost, yearly ROI, plots and examples.

        Writes one self-contained HTML file (no network, no JavaScript) and prints a summary.
        """
        from mwa_cli.report.api import make_report
        from mwa_cli.report.console import print_report
        from mwa_cli.report.evidence import TARGETS
        from mwa_cli.report.i18n import LANGS
        from mwa_cli.report.roi import Assumptions
        from mwa_cli.settings import resolve

        given = {"gpu-cost": gpu_cost, "currency": currency, "lines": lines, "retrains-per-year": retrains,
                 "lang": lang}
        gpu_cost, currency, lines, retrains, lang = resolve(given).values()  # options win, then mwa settings

        if target not in TARGETS:
            raise ConfigError(f"--target must be one of {', '.join(str(x) for x in TARGETS)}, got {target}",
                              hint="e.g. --target 99")
        if lang not in LANGS:
            raise ConfigError(f"--lang must be one of {', '.join(LANGS)}, got {lang!r}")
        a = Assumptions(gpu_cost_per_hour=gpu_cost, currency=currency, lines=lines, retrains_per_year=retrains)
        rep = make_report(list(run_dirs or []), runs, compare=compare, assumptions=a, lang=lang, out=out,
                          estimate=estimate, estimate_steps=estimate_steps, data_dir=data, target_pct=target,
                          zero_shot=zero_shot, say=lambda line: err_console.print(f"[dim]{line}[/]", highlight=False))
        if as_json:
            emit_json(rep)
        else:
            print_report(rep, console, explain=explain)
