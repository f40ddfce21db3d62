"""`mwa index --line LINE`: the search index of the line's current version, inside that version's folder, with
the version it was built for recorded in index.json (`"line"`), so search can tell when the line has moved on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mwa_cli.errors import ConfigError
from mwa_cli.lines.store import Line, LineStore


def line_record(line: Line, version: int) -> dict[str, Any]:
    """index.json's `"line"`: the line, the version the index was built with, and the pointer that says which
    version is current (read by `mwa_cli.search.store.line_version_warning`)."""
    return {"name": line.name, "store": str(line.path.parent), "version": int(version),
            "pointer": str(line.pointer_path)}


def previous_sources(line: Line) -> tuple[str | None, str | None]:
    """(photos folder, caption data dir) of the line's most recent index of any version, to index the same."""
    for v in sorted(line.published(), reverse=True):
        try:
            meta = json.loads((line.index_path(v) / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            return meta.get("source"), (meta.get("captions") or {}).get("data_dir")
    return None, None


def index_line(store: str | Path, line_name: str, photos: str | Path | None = None, *,
               captions: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Build or update the index of the line's current version (`mwa_cli.search.build.build_index` options
    pass through). Photos and captions default to those of the line's latest index."""
    from mwa_cli.search.build import build_index

    line = LineStore.open(store).line(line_name)
    version = line.current
    if version is None:
        raise ConfigError(f"nothing is published to line {line.name} yet, so there is nothing to index",
                          hint=f"publish a run first: mwa line publish {line.name} RUN")
    rec = line.verify_version(version)
    last_photos, last_captions = previous_sources(line)
    photos = photos or last_photos
    if photos is None:
        raise ConfigError(f"line {line.name} has no index yet: say which photos to index",
                          hint=f"mwa index PHOTOS_DIR --line {line.name} --store {line.path.parent}")
    summary = build_index(photos, line.version_path(version), line.index_path(version),
                          captions_dir=captions or last_captions, weights=rec.get("weights"),
                          tokenizer=rec.get("tokenizer"), line=line_record(line, version), **options)
    return dict(summary, line={"name": line.name, "version": version})
