"""Rank 0 alone writes and decides: the run folder as ranks > 0 see it (`NullRunDir`), and `on_main`, which runs
a function on rank 0 and hands its result to every rank."""

from __future__ import annotations

from typing import Any, Callable

from mwa_cli.errors import MwaError
from mwa_cli.train.dist.context import get
from mwa_cli.train.run_dir import RunDir


class NullRunDir(RunDir):
    """The run folder as seen by ranks > 0: readable, but every write is skipped (rank 0 alone writes)."""

    def write_config(self, config: dict) -> None:
        return None

    def append_metrics(self, row: dict) -> None:
        return None

    def truncate_metrics(self, after_step: int) -> None:
        return None

    def write_timing(self, timing: dict) -> None:
        return None

    def write_eval(self, eval_dict: dict, topk: dict | None = None, ranks=None) -> None:
        return None


def on_main(fn: Callable[[], Any]) -> Any:
    """Run `fn` on rank 0 only and hand its result (or its MwaError, raised again) to every rank."""
    dist = get()
    if not dist.enabled:
        return fn()
    payload: Any = None
    if dist.is_main:
        try:
            payload = ("ok", fn())
        except MwaError as exc:
            payload = ("error", exc)
    payload = dist.broadcast_object(payload)
    if payload[0] == "error":
        raise payload[1]
    return payload[1]
