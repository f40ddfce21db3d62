"""User-facing errors: a message that says what went wrong and a hint that says what to do."""

from __future__ import annotations

# Every exit code of every command (docs/formats.md "Exit codes" is the same table). Each number has one meaning,
# except the aliases in EXIT_ALIASES, whose meaning is confined to one command.
EXIT_OK = 0  # the command did what was asked
EXIT_INTERNAL = 1  # an unexpected error (a bug, a failing data loader): one line, MWA_DEBUG=1 for more
EXIT_CHECK_FAILED = 1  # mwa doctor: at least one check failed (its row says what to do)
EXIT_USAGE = 2  # bad input: an invalid option, a path that cannot be used, a folder another mwa process is writing
EXIT_DATA = 3  # unusable data: no photos or captions, an unreadable table, photo or search index
EXIT_STRICT = 4  # mwa prepare --strict: a file or row was rejected (rejected.csv is written, no dataset is)
EXIT_PEER_LOST = 5  # a training process whose peer (another process of the same run) went away first
EXIT_CORRUPT = 6  # a file mwa published differs from the sha256 recorded beside it (mwa_cli/integrity.py)
EXIT_NONFINITE = 7  # NaN or infinity: train's loss or weights (last good checkpoint kept); an adapter, index or metric
EXIT_OOM = 8  # mwa train: out of GPU memory even with a micro-batch of 1 (or a batch of 8 for --batch-size auto)
EXIT_EXPORT = 9  # mwa export: the exported graphs do not reproduce the model (the exporter or its check failed)
EXIT_NO_SPACE = 10  # a disk (or quota) is full: nothing half-written is kept; free space and run the command again
EXIT_NOT_WRITABLE = 11  # a folder or file cannot be written (or read): a read-only filesystem or no permission
EXIT_NO_MEMORY = 12  # out of memory on the host (RAM): an allocation failed, or a worker process was killed for it
EXIT_SIGINT = 130  # interrupted by Ctrl-C (SIGINT); mwa train saved a checkpoint to resume from
EXIT_SIGTERM = 143  # stopped by SIGTERM; mwa train saved a checkpoint to resume from

# Names sharing another's number (a script reads the code of the command it ran, so the command disambiguates).
EXIT_ALIASES = {"EXIT_CHECK_FAILED": "EXIT_INTERNAL"}


class MwaError(Exception):
    """An error the user can act on. The CLI prints it without a traceback and exits with `exit_code`."""

    exit_code = EXIT_USAGE

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
