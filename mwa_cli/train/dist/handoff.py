"""Rank 0's result for mwa's launcher: a small JSON file in the launcher's private temporary folder, so the
launcher exits with rank 0's code and can name the run folder when a rank fails."""

from __future__ import annotations

import os
from pathlib import Path

from mwa_cli.fileio import atomic_write_json
from mwa_cli.train.dist.context import is_main
from mwa_cli.train.dist.env import ENV_RESULT, RESULT_DIR_PREFIX, launched_by_mwa


def write_result(result: dict) -> None:
    """Rank 0 under mwa's launcher: leave the run's result for the launching process. Only a process started by
    the launcher does (a stray MWA_DIST_RESULT in a plain `mwa train` changes nothing), and only into the
    launcher's own private temporary folder."""
    path = os.environ.get(ENV_RESULT)
    if path and is_main() and launched_by_mwa() and Path(path).parent.name.startswith(RESULT_DIR_PREFIX):
        atomic_write_json(path, result)
