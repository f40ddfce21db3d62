"""User-facing errors: a message that says what went wrong and a hint that says what to do."""

from __future__ import annotations

EXIT_PEER_LOST = 5  # a training process whose peer (another process of the same run) went away first
EXIT_CORRUPT = 6  # a file mwa published differs from the sha256 recorded beside it (mwa_cli/integrity.py)


class MwaError(Exception):
    """An error the user can act on. The CLI prints it without a traceback and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class DataError(MwaError):
    """Bad or unusable input data (photos, captions, tables)."""


class CheckpointError(MwaError):
    """A checkpoint or adapter file that cannot be loaded onto the requested model."""


class ConfigError(MwaError):
    """An invalid option or combination of options."""


class IntegrityError(MwaError):
    """A file mwa published no longer matches the sha256 recorded beside it (damaged or edited by hand)."""

    exit_code = EXIT_CORRUPT
