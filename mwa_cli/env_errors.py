"""Failures the machine causes, neither bad input nor a bug: a full disk, a read-only folder or a missing
permission, the host out of memory, a worker process that died of one of them. `explain(exc)` turns such an
exception into a `MwaError` with its own message, hint and exit code (docs/formats.md, "Exit codes"), so the user
never reads "internal error … please report this" for them; None for anything else."""

from __future__ import annotations

import errno
import signal
from typing import Iterator

from mwa_cli.errors import EXIT_INTERNAL, EXIT_NO_MEMORY, EXIT_NO_SPACE, EXIT_NOT_WRITABLE, MwaError
from mwa_cli.printable import printable

_ALLOCATOR_WORDS = ("defaultcpuallocator: can't allocate", "can't allocate memory", "not enough memory",
                    "cannot allocate memory", "std::bad_alloc")
RESUME_HINT = "an interrupted training run continues with `mwa train --resume RUN`"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or during (a library often wraps an OSError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < 8:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def _where(exc: BaseException) -> str:
    name = getattr(exc, "filename", None)
    return f" ({printable(name)})" if name else ""


def no_space(where: str = "") -> MwaError:
    return MwaError(f"no space left on the disk{where}: nothing half-written was kept",
                    hint=f"free some space (or give an --out on another disk) and run the command again; "
                         f"{RESUME_HINT}", exit_code=EXIT_NO_SPACE)


def no_memory(what: str = "") -> MwaError:
    return MwaError(f"out of memory (RAM){what}: the computer could not give mwa the memory it asked for",
                    hint="close other programs, or ask for less at once: a smaller --batch-size or "
                         "--eval-batch-size, fewer --workers", exit_code=EXIT_NO_MEMORY)


def explain(exc: BaseException) -> MwaError | None:
    """The user-facing error for an exception the machine caused (module docstring), or None."""
    for e in _chain(exc):
        code = getattr(e, "errno", None)
        text = str(e).lower()
        if code in (errno.ENOSPC, errno.EDQUOT) or "no space left on device" in text or "disk quota" in text:
            return no_space(_where(e))
        if code == errno.EROFS or "read-only file system" in text:
            return MwaError(f"cannot write{_where(e)}: the folder is on a read-only filesystem",
                            hint="give an --out on a disk you can write to (or ask for the disk to be mounted "
                                 "read-write)", exit_code=EXIT_NOT_WRITABLE)
        if isinstance(e, PermissionError) or code in (errno.EACCES, errno.EPERM):
            return MwaError(f"permission denied{_where(e)}: this user may not write (or read) it",
                            hint="check the folder's permissions, or give another --out", exit_code=EXIT_NOT_WRITABLE)
        if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(w in text for w in _ALLOCATOR_WORDS)):
            return no_memory()
        if type(e).__name__ == "BrokenProcessPool":
            return worker_died(getattr(e, "exit_codes", None) or [])
    return None


def worker_died(exit_codes: list[int]) -> MwaError:
    """A pool of worker processes broke: what killed a worker, when its exit code says (SIGBUS is a memory-mapped
    file that could not be written, i.e. a full disk; SIGKILL is usually the kernel's out-of-memory killer)."""
    signals = {-c for c in exit_codes if c is not None and c < 0}
    if signal.SIGBUS in signals:
        return no_space(" (a worker process died of SIGBUS writing a memory-mapped file)")
    if signal.SIGKILL in signals:
        return no_memory(" (a worker process was killed, most likely by the system's out-of-memory killer)")
    how = f" (exit codes {sorted(exit_codes)})" if exit_codes else ""
    return MwaError(f"a worker process died unexpectedly{how}",
                    hint="run the command again with --workers 1, which shows the cause in this process",
                    exit_code=EXIT_INTERNAL)
