"""The folder `mwa export` writes, under the rules of every folder mwa writes (mwa_cli/outdir.py): made and
marked (`.mwa-export`) by mwa, locked while written, never a folder holding other files. An export killed half-way
(kill -9) leaves a marked folder without export.json: the next export there just runs again, and nothing takes the
half-written folder for an export (export.json is written last)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from mwa_cli.outdir import FolderLock, remove_temp, write_marker

TEMP_PATTERNS = (".*.tmp",)  # atomic writes' temporary files


@contextlib.contextmanager
def claim_export_dir(out: Path) -> Iterator[None]:
    """Make `out` (checked by `export_out_dir`) this export's own while it runs: locked and marked, what a killed
    export left removed under the lock, and a first export that fails or is stopped leaves no folder behind."""
    created = not out.exists()
    try:
        with FolderLock(out, "export"):
            remove_temp(out, TEMP_PATTERNS)
            write_marker(out, "export")
            yield
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
