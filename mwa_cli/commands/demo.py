"""`mwa demo`: prepare the sample photos, train mwa / nke / full-ft on equal budgets, write the report."""

from __future__ import annotations

from pathlib import Path

import typer

from mwa_cli.commands.common import EXTRA_ARGS, console, emit_json, err_console, guarded, refuse_extra_args

EPILOG = ("Examples:\n\n  mwa demo\n\n  mwa demo --out runs/demo --budget-per-method 30s\n\n"
          "  mwa demo --seeds 3     (each method three times: mean ± spread)\n\n"
          "  mwa demo --tune     (also the tuned MWA beside the default one)\n\n  mwa demo --json\n\n"
          "Run it again to continue an interrupted demo (finished runs are kept); --force starts over.")


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG, context_settings=EXTRA_ARGS)
    @guarded
    def demo(
        ctx: typer.Context,
        out: Path = typer.Option(Path("runs/demo"), help="Folder for the prepared data, the runs and the report."),
        budget_per_method: str = typer.Option("75s", help="Wall-clock budget of each training run."),
        device: str = typer.Option("auto", help="auto | cuda | cpu."),
        seeds: int = typer.Option(1, "--seeds", help="Train each method with this many seeds (0, 1, …); the report "
                                  "shows mean ± spread."),
        force: bool = typer.Option(False, "--force", help="Start over: remove the runs of an earlier demo in --out "
                                   "(by default they are kept, and an interrupted one continues)."),
        json_out: bool = typer.Option(False, "--json", help="Print the report's numbers as JSON (no progress bars)."),
        tune: bool = typer.Option(False, "--tune", help="Also tune MWA (`mwa tune`: four trials' time, each as long "
                                  "as a demo run) and train its recommendation next to the default one."),
    ) -> None:
        """Run the whole job on the bundled sample photos with the built-in beit3-mini backbone (no network).

        Prepares sample_data, evaluates the frozen backbone (zero-shot), trains mwa, nke and full-ft with equal
        budgets (each stops early once validation stops improving), evaluates them on the test split and writes
        the HTML report: recalls with 95 % intervals, a verdict that says whether the difference to full
        fine-tuning is real, and time to quality. About 5 minutes on 2 CPU cores (× --seeds).
        """
        refuse_extra_args(ctx.args, "--budget-per-method", budget_per_method)
        from mwa_cli.commands.progress import TrainProgress
        from mwa_cli.demo import run_demo
        from mwa_cli.report.console import print_report

        with TrainProgress(quiet=json_out, name_bars=True) as progress:  # one bar per training stage, with ETA
            say = err_console.print if json_out else progress.print
            result = run_demo(out, budget_per_method=budget_per_method, device=device, say=say, seeds=seeds,
                              force=force, progress=progress, tune=tune)
        if json_out:
            emit_json(result.report)
            return
        print_report(result.report, console)  # its last line gives the HTML report's path
