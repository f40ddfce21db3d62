"""Where pretrained weights come from: the official addresses, and `--weights none` (random on purpose).

Kept free of torch so the report and `mwa doctor` can read it cheaply."""

from __future__ import annotations

NO_WEIGHTS = "none"  # `--weights none`: a randomly initialised backbone, asked for by name
WEIGHTS_URLS = {
    "beit3-base": "https://conversationhub.blob.core.windows.net/beit-share-public/beit3/pretraining/"
                  "beit3_base_itc_patch16_224.pth",
    "beit3-large": "https://conversationhub.blob.core.windows.net/beit-share-public/beit3/pretraining/"
                   "beit3_large_itc_patch16_224.pth",
}
TOKENIZER_URL = "https://conversationhub.blob.core.windows.net/beit-share-public/beit3/sentencepiece/beit3.spm"


def random_on_purpose(weights: object) -> bool:
    """True for `--weights none`: a randomly initialised backbone asked for by name."""
    return isinstance(weights, str) and weights.strip().lower() == NO_WEIGHTS


_random_sources: set[str] = set()  # what this command built on a random backbone (runs, adapters, backbones)


def note_random_weights(what: str) -> None:
    """Remember that `what` (a run folder, an export, a backbone name) runs on random backbone weights: the
    command ends with one warning saying so (`random_weights_warning`)."""
    _random_sources.add(str(what))


def random_weights_warning() -> str | None:
    """The one warning about everything noted since the last call (then forgotten), or None."""
    if not _random_sources:
        return None
    names = ", ".join(sorted(_random_sources))
    _random_sources.clear()
    return (f"{names}: the backbone has random weights (--weights none), so recall, embeddings and search "
            "results say nothing about the pretrained model")
