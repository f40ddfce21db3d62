"""The `mwa` command line: a Typer app that only wires options to functions in the packages."""

from __future__ import annotations

import importlib

import typer

from mwa_cli import __version__

app = typer.Typer(
    name="mwa",
    help=(
        "Image-text retrieval on your own inspection photos: adapt BEiT-3 with MultiWay-Adapter "
        "and measure what it gains against full fine-tuning.\n\n"
        "Typical flow:\n\n"
        "  mwa prepare ./photos --out data\n\n"
        "  mwa train data --method mwa --budget 2h\n\n"
        "  mwa train data --method full-ft --budget 2h\n\n"
        "  mwa report --runs runs --compare full-ft"
    ),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
)

# Each module in mwa_cli.commands defines `register(app)`; listed here in help order.
COMMAND_MODULES = [
    "prepare",
    "train",
    "eval",
    "report",
    "runs",  # mwa runs, mwa show
    "index",
    "search",
    "export",
    "serve",
    "line",  # mwa line add / publish / list / show / rollback / report
    "demo",
    "doctor",
    "settings",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mwa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """mwa: MultiWay-Adapter retrieval proof-of-concept tool."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"mwa_cli.commands.{_name}").register(app)


def main() -> None:
    """Console-script entry point. The process ends within seconds of the command's end even if an exit handler
    blocks (`exit_soon`)."""
    try:
        app()
    except SystemExit as exc:
        from mwa_cli.commands.common import exit_soon

        exit_soon(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
        raise
