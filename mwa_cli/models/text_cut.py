"""Texts cut to a model's text length: remembered by the tokenizers, reported once per command (torch-free, so
every command can ask at its end)."""

from __future__ import annotations

from typing import Iterable

_cut: dict[int, set[str]] = {}  # text length limit -> distinct texts cut to it, since the last warning


def note_cut(texts: Iterable[str], max_len: int) -> None:
    """Remember texts that were cut to the model's text length (one warning per command: `truncation_warning`)."""
    texts = list(texts)
    if texts:
        _cut.setdefault(int(max_len), set()).update(texts)


def truncation_warning() -> str | None:
    """The one warning about every text cut since the last call (then forgotten), or None when none was cut."""
    if not _cut:
        return None
    parts = [f"{len(texts)} longer than {limit} tokens" for limit, texts in sorted(_cut.items())]
    _cut.clear()
    return (f"texts cut to the model's text length: {' and '.join(parts)} (the words past the limit were "
            "ignored); shorten long captions or queries")
