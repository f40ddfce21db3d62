"""Open the index, check the address, and run the app under Uvicorn until Ctrl-C."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Callable

from mwa_cli.errors import ConfigError


def check_address(host: str, port: int) -> None:
    """Fail with what to do when the address cannot be listened on (busy port, unknown host) before loading."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535 (got {port})")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f"--host {host!r} is not an address of this computer",
                          hint="use 127.0.0.1 (this PC only) or 0.0.0.0 (every network interface)") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use (another `mwa serve`?)",
                                  hint=f"stop the other program, or choose another port: --port {port + 1}"
                                  ) from None
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                              hint="use 127.0.0.1 and a port above 1024") from None


def serve(index_dir: str | Path | None = None, *, lines: str | Path | None = None, host: str = "127.0.0.1",
          port: int = 8765, adapter: str | Path | None = None, model: str | Path | None = None, device: str = "auto",
          heatmaps: bool = True, announce: Callable[[str], None] | None = None) -> None:
    """Serve one index (`index_dir`), or every line of a line store (`lines`: one shared backbone, each line's
    current version; mwa_cli.serve.lines_app), until Ctrl-C."""
    try:
        import uvicorn

        from mwa_cli.serve.app import create_app
    except ImportError as exc:  # pragma: no cover - the [serve] extra is installed with .[dev]
        raise ConfigError(f"mwa serve needs FastAPI and Uvicorn ({exc.name} is not installed)",
                          hint='pip install "mwa-cli[serve]"') from None
    if (index_dir is None) == (lines is None):
        raise ConfigError("give exactly one of --index INDEX_DIR and --lines STORE",
                          hint="e.g. mwa serve --index photos_index, or mwa serve --lines lines")
    if lines is not None and (adapter is not None or model is not None):
        raise ConfigError("--adapter and --model do not apply to --lines: each line answers with its current version")
    check_address(host, port)
    watcher = None
    if lines is not None:
        from mwa_cli.serve.lines_app import create_lines_app
        from mwa_cli.serve.lines_state import LiveLines

        watcher = LiveLines(lines, device=device).start()
        app = create_lines_app(watcher, host=host, heatmaps=heatmaps)
        what = ", ".join(f"{ln['name']} v{ln['served']}" if ln["served"] else f"{ln['name']} (waiting)"
                         for ln in watcher.status()["lines"])
    else:
        from mwa_cli.serve.state import LiveIndex

        live = LiveIndex(index_dir, adapter=adapter, model=model, device=device)  # type: ignore[arg-type]
        app = create_app(live, host=host, heatmaps=heatmaps)
        what = f"{live.index.n_images} photos"
    shown = f"[{host}]" if ":" in host else host
    if announce is not None:
        announce(f"http://{shown}:{port}/  ({what})")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
    finally:
        if watcher is not None:
            watcher.stop()
