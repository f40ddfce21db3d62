"""The lines `mwa serve --lines STORE` answers for: per line, the version in service (its adapter on the shared
backbone and its own index) and the version the line's pointer names, followed by a watcher thread.

A switch (publish, rollback) is taken up only when the new version is whole: its files match their sha256, its
index exists and was built for it, and its adapter is attached. Until then, and whenever that fails, the line
keeps answering with the version it has (the reason is in /api/lines). The switch itself is one reference
assignment: a request holds the `Served` it started with, so requests in flight finish on the old version."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mwa_cli.errors import EXIT_DATA, CheckpointError, DataError, MwaError
from mwa_cli.lines.shared import SharedBackbones
from mwa_cli.lines.store import Line, LineStore
from mwa_cli.search.model import ModelSource
from mwa_cli.search.store import INDEX_FILE, read_index_meta
from mwa_cli.serve.state import LiveIndex

WATCH_S = 1.0    # how often the watcher looks at every line's pointer
RETRY_S = 30.0   # a version that failed to load is tried again after this, or when its files change


@dataclass(frozen=True)
class Served:
    """One line version in service: the index (following its folder) and the model on the shared backbone."""

    version: int
    live: LiveIndex


def _stamp(*paths: Path) -> tuple:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class LiveLine:
    """One line: `served` (None until a version can answer), `current` (the version its pointer names) and why
    they differ (`pending`, or `last_error` when loading the current one failed)."""

    def __init__(self, name: str):
        self.name = name
        self.served: Served | None = None
        self.current: int | None = None
        self.pending: str | None = None
        self.last_error: str | None = None
        self.switches = 0
        self._failed: tuple[tuple, float] | None = None  # (stamp of what failed, when)

    def status(self) -> dict[str, Any]:
        s = self.served
        return {"name": self.name, "current": self.current, "served": s.version if s else None,
                "pending": self.pending, "last_error": self.last_error, "switches": self.switches,
                "images": s.live.index.n_images if s else None, "index": str(s.live.path) if s else None}

    def refresh(self, line: Line, models: SharedBackbones, encode_lock: threading.Lock) -> None:
        """Bring the line up to its pointer when the version it names can be served (watcher thread only)."""
        target = line.current
        self.current = target
        if target is None:
            self.pending = "nothing is published to this line yet"
            return
        if self.served is not None and self.served.version == target:
            self.pending = self.last_error = None
            return
        index_dir = line.index_path(target)
        if not (index_dir / INDEX_FILE).is_file():
            self.pending = (f"v{target} is current but has no index yet: run `mwa index --line {line.name} "
                            f"--store {line.path.parent}`" + (f"; v{self.served.version} answers meanwhile"
                                                              if self.served else ""))
            return
        stamp = _stamp(line.pointer_path, index_dir / INDEX_FILE, line.version_path(target) / "version.json")
        if self._failed and self._failed[0] == stamp and time.monotonic() - self._failed[1] < RETRY_S:
            return
        try:
            self.served = Served(target, self._open(line, target, index_dir, models, encode_lock))
        except MwaError as exc:
            self._failed, self.last_error = (stamp, time.monotonic()), exc.message
            return
        except (OSError, ValueError) as exc:
            self._failed, self.last_error = (stamp, time.monotonic()), f"{type(exc).__name__}: {exc}"
            return
        self.switches += 1
        self.pending = self.last_error = self._failed = None

    def _open(self, line: Line, version: int, index_dir: Path, models: SharedBackbones,
              encode_lock: threading.Lock) -> LiveIndex:
        rec = line.verify_version(version)  # every file of the version against its sha256
        built = (read_index_meta(index_dir).get("line") or {}).get("version")
        if built != version:
            raise DataError(f"{index_dir} records line version {built}, not v{version}",
                            hint=f"rebuild it: mwa index --line {line.name} --store {line.path.parent} --rebuild",
                            exit_code=EXIT_DATA)
        folder = line.version_path(version).resolve()

        def attach(source: ModelSource) -> Any:
            if source.exported or Path(source.path).resolve() != folder:
                raise CheckpointError(f"{index_dir} was built with {source.path}, not with v{version} of the line",
                                      hint=f"rebuild it: mwa index --line {line.name} --store {line.path.parent} "
                                           "--rebuild")
            return models.model_for(folder, weights=rec.get("weights"), tokenizer=rec.get("tokenizer"),
                                    lock=encode_lock)

        return LiveIndex(index_dir, load_model=attach)


class LiveLines:
    """Every line of a store, one backbone shared by all (`SharedBackbones`), one query encoding at a time
    (`encode_lock`: the model uses every core already, and attaching an adapter waits for it)."""

    def __init__(self, store: str | Path, *, device: str = "auto", watch_s: float = WATCH_S):
        self.store = LineStore.open(store)
        self.models = SharedBackbones(device)
        self.encode_lock = threading.Lock()
        self.lines: dict[str, LiveLine] = {}
        self.watch_s = watch_s
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()
        if not self.served_names():
            reasons = "; ".join(f"{n}: {ln.last_error or ln.pending}" for n, ln in self.lines.items()) or "no lines"
            raise DataError(f"no line of {self.store.root} can answer yet ({reasons})",
                            hint=f"publish a run and index it: mwa line publish LINE RUN --store {store}; "
                                 f"mwa index PHOTOS_DIR --line LINE --store {store}", exit_code=EXIT_DATA)

    def refresh(self) -> None:
        """One look at every line of the store (lines added since appear, removed ones go)."""
        lines = {}
        for name in self.store.names():
            live = self.lines.get(name) or LiveLine(name)
            try:
                live.refresh(self.store.line(name), self.models, self.encode_lock)
            except MwaError as exc:  # an unreadable line.json / current.json: keep what it served
                live.last_error = exc.message
            lines[name] = live
        self.lines = lines  # one assignment: request threads read either dict whole

    def start(self) -> "LiveLines":
        self._thread = threading.Thread(target=self._watch, name="mwa-lines-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_s):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive a bad moment (a disk error)
                self.last_error = f"{type(exc).__name__}: {exc}"

    def get(self, name: str) -> LiveLine | None:
        return self.lines.get(name)

    def served_names(self) -> list[str]:
        return [n for n, ln in self.lines.items() if ln.served is not None]

    def status(self) -> dict[str, Any]:
        return {"store": str(self.store.root), "lines": [ln.status() for ln in self.lines.values()],
                "watch_error": self.last_error, **self.models.memory()}
