"""The folder `mwa export` writes, under the rules of every folder mwa writes (mwa_cli/outdir.py): made and
marked (`.mwa-export`) by mwa, locked while written, never a folder holding other files. An export killed half-way
(kill -9) leaves a marked folder without export.json: the next export there just runs again, and nothing takes the
half-written folder for an export (export.json is written last)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from mwa_cli.errors import ConfigError
from mwa_cli.export.manifest import MANIFEST_FILE
from mwa_cli.outdir import FolderLock, is_empty, read_marker, remove_temp, write_marker

TEMP_PATTERNS = (".*.tmp",)  # atomic writes' temporary files


def is_export_folder(path: Path) -> bool:
    """A folder mwa made for an export: its marker, or (older versions) an export.json."""
    return read_marker(path, "export") is not None or (Path(path) / MANIFEST_FILE).is_file()


@contextlib.contextmanager
def claim_export_dir(out: Path, *, overwrite: bool) -> Iterator[None]:
    """Make `out` this export's own while it runs: a folder holding files mwa did not write is refused untouched;
    a finished export is replaced only with `overwrite`; what a killed export left is removed under the lock."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="choose a folder name")
    if not is_empty(out) and not is_export_folder(out):
        names = sorted(p.name for p in out.iterdir())[:4]
        raise ConfigError(f"--out {out} holds files mwa did not write ({', '.join(names)}): nothing in it is changed",
                          hint="choose an empty or new folder")
    if (out / MANIFEST_FILE).is_file() and not overwrite:
        raise ConfigError(f"{out} already holds an export", hint="add --overwrite to replace it, or choose --out")
    created = not out.exists()
    try:
        with FolderLock(out, "export"):
            remove_temp(out, TEMP_PATTERNS)
            write_marker(out, "export")
            yield
    except BaseException:
        if created:  # a first export that failed or was stopped leaves no folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
