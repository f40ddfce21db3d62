"""`mwa demo`: prepare the sample photos, train mwa / nke / full-ft for the same fixed steps, write the report."""

from __future__ import annotations

from pathlib import Path

import typer

from mwa_cli.commands.common import EXTRA_ARGS, console, emit_json, err_console, guarded, refuse_extra_args
from mwa_cli.demo import DEMO_STEPS

EPILOG = ("Examples:\n\n  mwa demo\n\n  mwa demo --out runs/demo --steps-per-method 40     (a quicker look, far from "
          "converged)\n\n"
          "  mwa demo --seeds 3     (each method three times: mean ± spread)\n\n"
          "  mwa demo --tune     (also the tuned MWA beside the default one)\n\n  mwa demo --json\n\n"
          "Run it again to continue an interrupted demo (finished runs are kept); --force starts over.")


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG, context_settings=EXTRA_ARGS)
    @guarded
    def demo(
        ctx: typer.Context,
        out: Path = typer.Option(Path("runs/demo"), help="Folder for the prepared data, the runs and the report."),
        steps_per_method: int = typer.Option(DEMO_STEPS, help="Optimizer steps of each training run (the same for "
                                             "every method; a fixed count, so two demos give the same numbers)."),
        device: str = typer.Option("auto", help="auto | cuda | cpu."),
        seeds: int = typer.Option(1, "--seeds", help="Train each method with this many seeds (0, 1, …); the report "
                                  "shows mean ± spread, and its verdict's interval holds the seed-to-seed spread."),
        force: bool = typer.Option(False, "--force", help="Start over: remove the runs of an earlier demo in --out "
                                   "(by default they are kept, and an interrupted one continues)."),
        json_out: bool = typer.Option(False, "--json", help="Print the report's numbers as JSON (no progress bars)."),
        tune: bool = typer.Option(False, "--tune", help="Also tune MWA (`mwa tune`: four trials' time, each as long "
                                  "as a demo run) and train its recommendation next to the default one."),
    ) -> None:
        """Run the whole job on the bundled sample photos with the built-in beit3-mini backbone (no network).

        Prepares sample_data, evaluates the frozen backbone (zero-shot), trains mwa, nke and full-ft for the same
        fixed number of steps (so a busy machine takes longer but gives the same numbers), says how long each took,
        evaluates them on the test split and writes the HTML report: recalls with 95 % intervals beside chance and
        zero-shot, a verdict that says whether the difference to full fine-tuning is real, and time to quality.
        About 5 minutes on 2 CPU cores (× --seeds).
        """
        refuse_extra_args(ctx.args, "--steps-per-method", None)
        from mwa_cli.commands.progress import TrainProgress
        from mwa_cli.demo import run_demo
        from mwa_cli.report.console import print_report

        with TrainProgress(quiet=json_out, name_bars=True) as progress:  # one bar per training stage, with ETA
            say = err_console.print if json_out else progress.print
            result = run_demo(out, steps_per_method=steps_per_method, device=device, say=say, seeds=seeds,
                              force=force, progress=progress, tune=tune)
        if json_out:
            emit_json(result.report)
            return
        print_report(result.report, console)  # its last line gives the HTML report's path
