"""Shared helpers for the thin Typer commands: consoles, error guard, JSON output."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import sys
import threading
from enum import StrEnum
from typing import Annotated, Any, Callable, Optional, Sequence, TypeVar

import click
import typer
from rich.console import Console

from mwa_cli.errors import EXIT_INTERNAL, EXIT_PEER_LOST, EXIT_SIGINT, ConfigError, MwaError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # messages hold paths and commands to copy: never wrapped

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
            raise typer.Exit(EXIT_SIGINT) from None
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - no traceback for the user
            if os.environ.get("MWA_DEBUG"):
                raise
            if is_disk_full(exc):
                err_console.print(f"[bold red]error:[/] no space left on the disk ({exc})", highlight=False)
                err_console.print("[yellow]hint:[/] free some space and run the command again; an interrupted "
                                  "training run continues with `mwa train --resume RUN`", highlight=False)
                raise typer.Exit(EXIT_INTERNAL) from None
            from mwa_cli.train.dist.peer_loss import is_peer_loss  # here: importing commands loads no training code

            if is_peer_loss(exc):
                err_console.print("[bold red]error:[/] lost contact with another training process: it stopped or "
                                  "failed (its own message says why)", highlight=False)
                raise typer.Exit(EXIT_PEER_LOST) from None
            err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}", highlight=False)
            err_console.print("[yellow]hint:[/] please report this with the command line; set MWA_DEBUG=1 "
                              "to see the traceback", highlight=False)
            raise typer.Exit(EXIT_INTERNAL) from None

    @functools.wraps(fn)
    def warned(*args: Any, **kwargs: Any) -> Any:
        try:
            return wrapper(*args, **kwargs)
        finally:
            from mwa_cli.models.sources import random_weights_warning
            from mwa_cli.models.text_cut import truncation_warning

            for text in (truncation_warning(), random_weights_warning()):  # once per command, however many
                if text:
                    err_console.print(f"[yellow]warning:[/] {text}", highlight=False)

    return warned  # type: ignore[return-value]


EXIT_DEADLINE_S = 10.0


def exit_soon(code: int, delay_s: float = EXIT_DEADLINE_S) -> None:
    """After an error, make sure the process ends: if the interpreter's own shutdown (exit handlers, a process
    group teardown, worker joins) has not ended it within `delay_s`, end it with `code` there and then.
    Called by the console entry point only (never inside a test's in-process CLI runner)."""

    def force() -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(delay_s, force)
    timer.daemon = True
    timer.start()


def is_disk_full(exc: BaseException) -> bool:
    """True for a write that failed because the disk is full (OSError ENOSPC, or a library's own error)."""
    return getattr(exc, "errno", None) == errno.ENOSPC or "no space left on device" in str(exc).lower()


# Options several commands declare with the same name, type and help, declared once (default in the signature)
DeviceOption = Annotated[str, typer.Option("--device", help="auto | cuda | cpu.")]
TokenizerOption = Annotated[Optional[str], typer.Option("--tokenizer", help="Sentencepiece model (beit3.spm).")]
RunWeightsOption = Annotated[Optional[str], typer.Option("--weights", help="Backbone weights \\[default: the run's].")]
RunTokenizerOption = Annotated[Optional[str], typer.Option("--tokenizer",
                                                           help="Sentencepiece model \\[default: the run's].")]
SummaryJsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout only.")]


def choices(name: str, values: Sequence[str]) -> type[StrEnum]:
    """An option type accepting exactly `values`: click refuses anything else (exit 2, listing them) and the help
    shows them. Members are str, equal to their spelling."""
    return StrEnum(name, {v: v for v in values})


EXTRA_ARGS = {"allow_extra_args": True}  # context_settings of commands that explain stray words themselves
_UNIT_WORD = re.compile(r"(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s|days?|d)", re.I)


def refuse_extra_args(args: list[str], option: str, value: str | None, positional: str | None = None) -> None:
    """Words the command did not expect (click's "unexpected extra argument (hours)"), explained. `--budget 2
    hours` unquoted reaches the command as value "2" and a stray "hours" (or, before the data folder, as the
    positional `positional`): say to write 2h or to quote it."""
    unit = next((w for w in [*args, positional or ""] if _UNIT_WORD.fullmatch(w)), None)
    if value is not None and unit is not None and re.fullmatch(r"\d+(\.\d*)?", value.strip()):
        raise ConfigError(f"{option} {value} {unit}: the shell passed the budget as two words",
                          hint=f"write {option} {value}{unit[0].lower()} (e.g. 2h, 90m, 1h30m) or quote it: "
                               f"{option} \"{value} {unit}\"")
    if args:
        raise ConfigError(f"unexpected extra argument(s): {' '.join(args)}",
                          hint="quote a value that contains spaces; `--help` lists the options")


def emit_json(obj: Any) -> None:
    """Write `obj` as JSON on stdout (for --json), nothing else on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
