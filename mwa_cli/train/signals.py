"""Ctrl-C and SIGTERM during training: a flag read at step boundaries, and one decision for every rank."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any


class SignalFlag:
    """SIGINT/SIGTERM set a flag read at step boundaries; a second signal interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum, _frame) -> None:
        if self.signum is not None:  # second signal: stop now (the checkpoint on disk stays intact)
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, prev in self._previous.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, prev)
        self._previous.clear()


def agree_stop(dctx, flag: SignalFlag, must_stop: bool, time_due: bool, *more: bool) -> tuple:
    """One decision for every rank before a step: the signal any rank received, rank 0's budget stop and clock
    (and any `more` of rank 0's flags, e.g. a validation check due); returns (signal, must_stop, time_due, *more).

    The agreed signal decides. A signal that lands during the all-reduce stays in ``flag.signum`` and is agreed on
    before the next step (writing the agreed value back unconditionally would drop it: the run would go on)."""
    if not dctx.enabled:
        return (flag.signum, must_stop, time_due, *more)
    agreed, flags = dctx.agree(flag.signum, (must_stop, time_due, *more))
    if agreed is not None:
        flag.signum = agreed
    return (agreed, *flags)

