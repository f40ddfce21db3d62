"""The one way text that came from a file or a file name is made safe for a terminal: `printable(text)`.

A photo named ``$'\\e]0;PWNED\\a.jpg'``, a caption holding ``\\e[2J`` or a NUL, a run file whose fields carry escape
sequences: printed raw, they would set the window title, clear the screen or hide what follows. `printable`
replaces every character a terminal acts on instead of showing (C0 and C1 controls, DEL, NUL, line and paragraph
separators, the bidirectional overrides that reorder a line) by a visible escape (``\\x1b``, ``\\x00``,
``\\u202e``), and a byte of a file name that is not UTF-8 (Python's surrogate escape) by ``\\xNN``. Everything
else, Japanese text included, is left as it is. Library modules call it on what they put in messages; the
command layer's consoles also pass every printed segment through it (mwa_cli/commands/common.py).
"""

from __future__ import annotations

import re

# what a terminal acts on; "\n" is added for one-line fields (file names, captions, table cells)
UNSAFE_CHARS = "\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_MULTILINE = re.compile(f"[{UNSAFE_CHARS}]")
_UNSAFE_ONE_LINE = re.compile(f"[{UNSAFE_CHARS}\n]")


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    if match.group() in _NAMED:
        return _NAMED[match.group()]
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 in a file name (os.fsdecode's surrogate escape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object, *, newlines: bool = False) -> str:
    """`text` as a string a terminal shows as it is: controls and escape sequences replaced visibly (see the
    module docstring). `newlines`: keep line breaks (a multi-line message); by default they are escaped too."""
    s = str(text)
    pattern = _UNSAFE_MULTILINE if newlines else _UNSAFE_ONE_LINE
    return pattern.sub(_escape, s) if pattern.search(s) else s
