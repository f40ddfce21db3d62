"""`mwa settings`: show, set and unset your defaults for the report's assumptions (mwa_cli/settings.py)."""

from __future__ import annotations

import typer

from mwa_cli.commands.common import console, emit_json, guarded

HELP = """Your defaults for the report's price, currency, lines, retrains per year and language.

Kept in settings.toml in your config folder ($MWA_CONFIG_HOME, else $XDG_CONFIG_HOME/mwa, else ~/.config/mwa).
`mwa report` and `mwa demo` use them instead of mwa's defaults; an option on the command line always wins.

Examples:

  mwa settings                          (every setting, its value and where it comes from)

  mwa settings set gpu-cost 0.9

  mwa settings set currency EUR

  mwa settings unset gpu-cost

  mwa settings path
"""


def register(app: typer.Typer) -> None:
    group = typer.Typer(help=HELP, no_args_is_help=False, invoke_without_command=True, rich_markup_mode="rich")
    app.add_typer(group, name="settings")

    @group.callback()
    @guarded
    def settings_root(ctx: typer.Context,
                      json_out: bool = typer.Option(False, "--json", help="Print the settings as JSON.")) -> None:
        if ctx.invoked_subcommand is None:
            _show(json_out)

    @group.command("show")
    @guarded
    def show(json_out: bool = typer.Option(False, "--json", help="Print the settings as JSON.")) -> None:
        """Every setting, the value in force and where it comes from (settings file or mwa's default).

        Examples:

          mwa settings show

          mwa settings show --json
        """
        _show(json_out)

    @group.command("set", context_settings={"ignore_unknown_options": True})  # set gpu-cost -1: a value
    @guarded
    def set_cmd(key: str = typer.Argument(..., help="gpu-cost | currency | lines | retrains-per-year | lang."),
                value: str = typer.Argument(..., help="The new default.")) -> None:
        """Store a default (checked first: a bad value changes nothing).

        Examples:

          mwa settings set gpu-cost 0.9

          mwa settings set lang ja
        """
        from mwa_cli.settings import set_setting, settings_path

        stored = set_setting(key, value)
        console.print(f"{key} = {stored!r} (in {settings_path()})", highlight=False, soft_wrap=True)

    @group.command("unset")
    @guarded
    def unset_cmd(key: str = typer.Argument(..., help="The setting to forget.")) -> None:
        """Forget a default: mwa's own is used again.

        Examples:

          mwa settings unset gpu-cost
        """
        from mwa_cli.settings import unset_setting

        was = unset_setting(key)
        console.print(f"{key}: {'unset' if was else 'was not set'}; mwa's default applies", highlight=False)

    @group.command("path")
    @guarded
    def path_cmd() -> None:
        """Where the settings file is (it exists once something is set).

        Examples:

          mwa settings path
        """
        from mwa_cli.settings import settings_path

        typer.echo(str(settings_path()))


def _show(json_out: bool) -> None:
    from rich.table import Table

    from mwa_cli.settings import effective_settings, settings_path

    rows = effective_settings()
    if json_out:
        emit_json({"path": str(settings_path()), "settings": rows})
        return
    table = Table(title="mwa settings", title_justify="left", caption=str(settings_path()), caption_justify="left")
    for col in ("setting", "value", "from", "what"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["key"], str(r["value"]), r["source"], r["help"])
    console.print(table)
