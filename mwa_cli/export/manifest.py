"""An export directory's manifest (`export.json`): its name and format version, and how to recognise and read it.
Both the exporter and everything that loads an export (onnxruntime, `mwa index` / `mwa search`) import this."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mwa_cli.errors import CheckpointError, ConfigError

MANIFEST_FILE = "export.json"
FORMAT_VERSION = 1


def is_export_dir(path: str | Path) -> bool:
    """Whether `path` is a folder written by `mwa export`."""
    return (Path(path).expanduser() / MANIFEST_FILE).is_file()


def read_manifest(export_dir: str | Path) -> dict[str, Any]:
    folder = Path(export_dir).expanduser()
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ConfigError(f"no exported model at {folder} (the folder does not exist)",
                          hint="give the folder written by `mwa export RUN_DIR --format onnx`")
    if not path.is_file():
        raise ConfigError(f"{folder} is not an exported model ({MANIFEST_FILE} is missing)",
                          hint="give the folder written by `mwa export RUN_DIR --format onnx`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}", hint="export the run again") from None
    if meta.get("format_version") != FORMAT_VERSION or meta.get("format") != "onnx":
        raise CheckpointError(f"{path} is an export format this mwa does not read "
                              f"(format {meta.get('format')}, version {meta.get('format_version')})",
                              hint="export the run again with this version of mwa")
    return meta


def export_out_dir(run_folder: Path, out_dir: str | Path | None, default: str, manifest: str, overwrite: bool,
                   ) -> Path:
    """The folder an export is written to (`default` inside the run folder when not given): refuses a file, a
    folder holding something else than an export of this kind (`manifest` marks it), or an earlier export unless
    `overwrite`."""
    out = (Path(out_dir).expanduser() if out_dir else Path(run_folder) / default).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="choose a folder name")
    if out.is_dir() and any(out.iterdir()) and not (out / manifest).is_file():
        raise ConfigError(f"--out {out} exists and is not an mwa export", hint="choose an empty or new folder")
    if (out / manifest).is_file() and not overwrite:
        raise ConfigError(f"{out} already holds an export", hint="add --overwrite to replace it, or choose --out")
    return out
