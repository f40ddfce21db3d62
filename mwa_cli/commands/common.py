"""Shared helpers for the thin Typer commands: consoles, error guard, JSON output."""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable, TypeVar

import click
import typer
from rich.console import Console

from mwa_cli.errors import MwaError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Turn MwaError into a clear message and exit code, Ctrl-C into exit 130, and any other exception into a
    one-line internal error with exit 1 (the traceback only with MWA_DEBUG=1): never a traceback by default."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MwaError as exc:
            err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
            if exc.hint:
                err_console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - no traceback for the user
            if os.environ.get("MWA_DEBUG"):
                raise
            err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}", highlight=False)
            err_console.print("[yellow]hint:[/] please report this with the command line; set MWA_DEBUG=1 "
                              "to see the traceback", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def emit_json(obj: Any) -> None:
    """Write `obj` as JSON on stdout (for --json), nothing else on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
