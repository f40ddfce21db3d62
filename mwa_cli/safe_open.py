"""Open input files safely: only regular files, never more than a size limit, JSON with depth and value limits.

Opening a named pipe (FIFO) blocks until someone writes to it, and reading a device such as /dev/zero never ends:
an input path is therefore checked with `os.stat` before it is opened, opened with O_NONBLOCK (so a FIFO swapped in
after the check cannot block either) and checked again on the open descriptor, then read up to its size limit.
Every input mwa reads (photos, captions tables and sidecar texts, query photos, config and label files, the JSON
files of run folders and indexes) goes through `read_bytes` / `read_text` / `load_json`; `not_regular` gives
the reason as words for a folder scan that lists refused files instead of stopping.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from mwa_cli.errors import EXIT_DATA, MwaError
from mwa_cli.printable import printable

MiB = 1 << 20
PHOTO_LIMIT = 1024 * MiB  # a photo file (a 16-bit RGBA TIFF at the pixel cap is about 720 MiB)
TABLE_LIMIT = 1024 * MiB  # a captions table
TEXT_LIMIT = 16 * MiB  # a sidecar caption file, a template or label file, a config file
JSON_LIMIT = 256 * MiB  # a JSON file mwa wrote (eval_ranks.json of a million queries is about 10 MiB)
MAX_JSON_DEPTH = 64  # mwa's own files nest a few levels; deeper is not a file mwa wrote
MAX_JSON_INT = 2**63 - 1  # what numpy and torch integers hold

_KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


class InputFileError(MwaError):
    """An input path that is not a readable regular file within its size limit; exit 3 unless said otherwise.
    `reason` is the why alone, without the path (for a list of refused files)."""

    exit_code = EXIT_DATA

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None, reason: str = ""):
        super().__init__(message, hint=hint, exit_code=exit_code)
        self.reason = reason or message


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def not_regular(path: str | Path) -> str | None:
    """Why `path` (its target, for a link) cannot be read as an input file, in words; None for a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "the file does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    return f"{_kind(st.st_mode)}, not a regular file: refused (mwa reads only ordinary files)"


def _too_big(size: int, limit: int) -> str:
    return f"{size / MiB:,.1f} MiB, over the limit of {limit / MiB:,.0f} MiB for this kind of file"


def read_bytes(path: str | Path, *, limit: int, what: str = "file", exit_code: int | None = None) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; `InputFileError` naming `what` and the
    path otherwise (not found, a FIFO or device, a folder, too big, unreadable). A FIFO is never opened."""
    shown = printable(path)
    fail = lambda why: InputFileError(f"{what} {shown}: {why}", exit_code=exit_code, reason=why,  # noqa: E731
                                      hint="give an ordinary file (not a pipe, device or folder)")
    why = not_regular(path)
    if why is not None:
        raise fail(why)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the check and the open
            raise fail(f"{_kind(st.st_mode)}, not a regular file: refused")
        if st.st_size > limit:
            raise fail(_too_big(st.st_size, limit))
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise fail(f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:  # grew while read
        raise fail(_too_big(len(data), limit))
    return data


def read_text(path: str | Path, *, limit: int = TEXT_LIMIT, what: str = "file", exit_code: int | None = None) -> str:
    """`read_bytes` decoded as UTF-8 (a BOM is removed); undecodable bytes are an `InputFileError`."""
    data = read_bytes(path, limit=limit, what=what, exit_code=exit_code)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{what} {printable(path)} is not UTF-8 text (byte {exc.start})",
                             hint="save it as UTF-8", exit_code=exit_code) from None


def parse_json(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON with limits: NaN and Infinity refused, integers within ±MAX_JSON_INT, nesting at most `max_depth`
    levels. Raises ValueError (with the reason) for anything else, as `json.loads` does for bad syntax."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"holds {name}, which is no number mwa writes")

    def bounded_int(text_int: str) -> int:
        if len(text_int) > 18 and (len(text_int) > 20 or abs(int(text_int)) > MAX_JSON_INT):
            raise ValueError(f"holds the integer {text_int[:30]}, too large for a count")
        return int(text_int)

    def finite_float(text_float: str) -> float:
        value = float(text_float)
        if not math.isfinite(value):
            raise ValueError(f"holds the number {text_float[:30]}, too large to be finite")
        return value

    try:
        data = json.loads(text, parse_constant=refuse_constant, parse_int=bounded_int, parse_float=finite_float)
    except RecursionError:
        raise ValueError(f"nests deeper than {max_depth} levels") from None
    if nesting_depth(data) > max_depth:
        raise ValueError(f"nests deeper than {max_depth} levels")
    return data


def nesting_depth(obj: Any) -> int:
    """Nesting depth of lists and objects, without recursion (only containers are visited)."""
    if not isinstance(obj, (list, dict)):
        return 0
    deepest, stack = 1, [(obj, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        for v in item.values() if isinstance(item, dict) else item:
            if isinstance(v, (list, dict)):
                stack.append((v, level + 1))
    return deepest


def load_json(path: str | Path, *, limit: int = JSON_LIMIT, what: str | None = None, exit_code: int | None = None,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON file read with `read_text` and parsed with `parse_json`; `InputFileError` names the file otherwise."""
    name = what or Path(path).name
    text = read_text(path, limit=limit, what=name, exit_code=exit_code)
    try:
        return parse_json(text, max_depth=max_depth)
    except ValueError as exc:
        why = f"is not valid JSON ({printable(str(exc))[:200]})"
        raise InputFileError(f"{name} ({printable(path)}) {why}", hint="it was damaged or changed by another program",
                             exit_code=exit_code, reason=why) from None
