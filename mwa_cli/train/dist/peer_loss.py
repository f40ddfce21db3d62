"""The error a training process sees when another process of the same run has gone away (torch-free: the
command line's error guard asks it for every unexpected exception)."""

from __future__ import annotations

_PEER_LOSS = ("connection closed by peer", "connection reset by peer", "broken pipe", "socket closed",
              "connection refused")


def is_peer_loss(exc: BaseException) -> bool:
    """True for the error a training process sees when another process of the same run has gone away."""
    name = type(exc).__name__
    text = str(exc).lower()
    return name in ("DistBackendError", "DistNetworkError") or (
        name in ("RuntimeError", "DistError") and any(p in text for p in _PEER_LOSS))
