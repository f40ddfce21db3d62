"""The served index: loaded once, reloaded when `mwa index` writes a new generation (no restart), with the
model that queries it and a bounded thumbnail cache."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from mwa_cli.errors import MwaError
from mwa_cli.search.model import ModelSource, model_for_index
from mwa_cli.search.store import INDEX_FILE, SearchIndex, read_index_meta

RECHECK_S = 1.0      # how often index.json is looked at (one stat per request at most once a second)
THUMB_CACHE = 2048   # thumbnails kept (data URIs of about 5 KB each)


class LiveIndex:
    """A search index that follows its folder: requests see the newest complete generation. A generation that
    cannot be read yet (written right now, or damaged) leaves the previous one in service and is retried."""

    def __init__(self, index_dir: str | Path, *, adapter: str | Path | None = None, model: str | Path | None = None,
                 device: str = "auto", load_model: Callable[[ModelSource], Any] | None = None):
        """`load_model` builds the model from the checked source instead of `ModelSource.load` (the line server
        attaches adapters to its shared backbone there)."""
        self.path = Path(index_dir).expanduser().resolve()
        self._adapter, self._model_path, self._device = adapter, model, device
        self._load_model = load_model
        self._lock = threading.Lock()
        self.encode_lock = threading.Lock()  # one query encoding at a time: the model uses every core already
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.index: SearchIndex
        self.model: Any = None
        self.identity: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self._thumbs: OrderedDict[str, str | None] = OrderedDict()
        self._captions_of: dict[str, str] = {}
        self._load()  # the first load's errors reach the caller (`mwa serve` prints them and exits)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.path / INDEX_FILE).stat()
        except OSError:
            return None
        return int(st.st_mtime_ns), int(st.st_size)

    def _load(self) -> None:
        stamp = self._file_stamp()
        meta = read_index_meta(self.path)
        source = model_for_index(meta, self.path, adapter=self._adapter, model=self._model_path)
        index = SearchIndex.load(self.path)
        if self.model is None or meta.get("identity") != self.identity:
            self.model = self._load_model(source) if self._load_model else source.load(device=self._device)
            self.identity = meta.get("identity")
        self.index = index
        self._captions_of = _first_captions(index)
        self._stamp = stamp
        self.last_error = None

    def current(self) -> SearchIndex:
        """The newest readable generation (checks index.json at most once every RECHECK_S)."""
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return self.index
        with self._lock:
            if now - self._checked < RECHECK_S:
                return self.index
            self._checked = now
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                try:
                    self._load()
                    self.reloads += 1
                except MwaError as exc:  # mid-write or damaged: keep serving the previous generation
                    self.last_error = exc.message
                except (OSError, ValueError) as exc:
                    self.last_error = str(exc)
        return self.index

    def caption_of(self, image_id: str) -> str | None:
        return self._captions_of.get(image_id)

    def thumbnail(self, rel_path: str, image_id: str) -> str | None:
        """A JPEG data URI of an indexed photo (never a file outside the indexed folder)."""
        from mwa_cli.search.html import PhotoThumbs

        key = f"{image_id}:{rel_path}"
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        uri = PhotoThumbs(self.index.source, self.index.meta.get("max_pixels")).thumbnail(rel_path)
        with self._lock:
            self._thumbs[key] = uri
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return uri


def _first_captions(index: SearchIndex) -> dict[str, str]:
    """image_id → one caption describing it (the caption set's rows name the first photo of each caption)."""
    if index.captions is None:
        return {}
    out: dict[str, str] = {}
    for cap, iid in zip(index.captions["caption"], index.captions["image_id"]):
        out.setdefault(str(iid), str(cap))
    return out
