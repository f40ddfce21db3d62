"""Real special files and filesystems for the hardening tests: FIFOs, a small tmpfs, a read-only mount, a process
without root's powers over file permissions; and `finishes_within`, which turns a hang (a reader blocked on a
FIFO) into a failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest


def make_fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _unblock(fifo: Path) -> None:
    """Open the FIFO for reading and writing and close it: a reader blocked in open() gets EOF."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))


def finishes_within(seconds: float, fn: Callable[[], Any], fifos: list[Path] = ()) -> Any:
    """`fn()` run in a thread; fails the test (after unblocking `fifos`) when it has not returned in `seconds`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for f in fifos:
            _unblock(f)
        thread.join(10)
        pytest.fail(f"still running after {seconds} s: blocked (a FIFO opened or read?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size_mb: int, *, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of `size_mb` MiB at `path` (read-only: empty and not writable); skips when mounting is refused
    (not root, or a container without the capability): the injected-fault tests cover those machines."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_mb}m" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def without_root_powers(cmd: list[str]) -> list[str]:
    """`cmd` run so that file permissions apply to it: root reads any file, so root's DAC capabilities are dropped
    (setpriv); unchanged for an unprivileged user. Skips when running as root without setpriv."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]
