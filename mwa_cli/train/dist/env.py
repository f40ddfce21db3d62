"""The launch environment of a training process: torchrun's variables and those mwa's launcher adds. Torch-free,
so the command line can ask "am I a rank?" before importing torch."""

from __future__ import annotations

import os
import time

ENV_RESULT = "MWA_DIST_RESULT"  # file where rank 0 writes {"exit_code": ...} for `launch`
ENV_T0 = "MWA_DIST_T0"  # wall-clock start of the launching process (the budget counts from there)
ENV_COMMAND = "MWA_DIST_COMMAND"  # the command line the user typed (recorded in config.json)
RESULT_DIR_PREFIX = "mwa-dist-"  # the launcher's private temporary folder (holds ENV_RESULT's file)


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def under_torchrun() -> bool:
    """True in a process started by torchrun / the elastic launcher (RANK and WORLD_SIZE set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def launched_by_mwa() -> bool:
    return bool(os.environ.get(ENV_RESULT)) and under_torchrun()


def start_time_monotonic() -> float | None:
    """The launching process's start, on this process's monotonic clock (None when not launched by `launch`)."""
    t0 = os.environ.get(ENV_T0)
    if not t0:
        return None
    try:
        return time.monotonic() - max(0.0, time.time() - float(t0))
    except ValueError:
        return None


def user_command() -> str | None:
    """The command line the user typed, passed on by mwa's launcher (ignored in any other process)."""
    return (os.environ.get(ENV_COMMAND) or None) if launched_by_mwa() else None
