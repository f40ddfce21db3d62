"""onnxruntime, loaded with its telemetry off: `onnxruntime()` is the only way mwa imports it.

onnxruntime's Linux and Windows builds record usage events (a device id, the CPU model, the OS, the Python path)
in a store outside the user's folders, ~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db, created as
soon as the library loads. Its own switch, the ORT_DISABLE_TELEMETRY variable, is read at that moment, so it is
set here before the import; `disable_telemetry_events()` also turns the events off when something else loaded
the library first. Checked by tests/unit/export/test_no_writes_outside.py (HOME pointed at an empty folder).
"""

from __future__ import annotations

import os
from typing import Any


def onnxruntime() -> Any:
    """The onnxruntime module, its telemetry off (module docstring)."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort
