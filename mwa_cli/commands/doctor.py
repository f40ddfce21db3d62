"""`mwa doctor`: check the environment."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mwa_cli.commands.common import console, emit_json, guarded
from mwa_cli.errors import EXIT_CHECK_FAILED

STYLE = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}


def register(app: typer.Typer) -> None:
    @app.command(epilog="Examples:\n\n  mwa doctor\n\n  mwa doctor --no-network --json")
    @guarded
    def doctor(
        runs: Path = typer.Option(Path("runs"), help="Where runs will be written (checked for free space)."),
        network: bool = typer.Option(True, help="Check whether the checkpoint host is reachable."),
        json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    ) -> None:
        """Check Python, torch, GPU, disk, available backbone weights and network; say what to do."""
        from mwa_cli.doctor import as_dicts, run_checks

        checks = run_checks(runs, network)
        if json_out:
            emit_json(as_dicts(checks))
        else:
            table = Table(title="mwa doctor")
            for col in ("check", "status", "found", "what to do"):
                table.add_column(col)
            for c in checks:
                table.add_row(c.name, STYLE[c.status], c.found, c.advice)
            console.print(table)
        if any(c.status == "fail" for c in checks):
            raise typer.Exit(EXIT_CHECK_FAILED)
