"""The app of `mwa serve --lines STORE`: the pages, API and rules of `mwa serve` (`create_app`), each request
answered by one line: `?line=NAME` (pages without it: the first line that can answer; the API needs it when the
store has several lines). `/api/lines` lists the lines, the version each serves and why one lags its pointer.

How a request is tied to its line: `SelectLine`, the innermost middleware (inside the host guard and the
security headers), picks the line's `Served` once, when the request arrives, and `LineDispatch` (what create_app
calls `live`) answers every lookup of that request from it: one request, one version, one adapter, whatever is
published meanwhile. Responses name it in the `X-Mwa-Line` header ("NAME vN")."""

from __future__ import annotations

import contextvars
import html
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

from mwa_cli.serve.lines_state import LiveLines, Served

LINE_HEADER = "x-mwa-line"


@dataclass(frozen=True)
class Choice:
    """The line of one request and what its page should say about it."""

    name: str
    served: Served
    note: str | None


_CHOICE: contextvars.ContextVar[Choice | None] = contextvars.ContextVar("mwa_line", default=None)


class LineDispatch:
    """The `live` of create_app for a line store: each attribute is the request's own line version's."""

    def __init__(self, lines: LiveLines):
        self.lines = lines
        self.encode_lock = lines.encode_lock

    @staticmethod
    def _choice() -> Choice:
        choice = _CHOICE.get()
        if choice is None:  # pragma: no cover - SelectLine sets it for every request that reaches a route
            raise RuntimeError("no line chosen for this request")
        return choice

    def current(self) -> Any:
        return self._choice().served.live.current()

    @property
    def model(self) -> Any:
        return self._choice().served.live.model

    @property
    def reloads(self) -> int:
        return self._choice().served.live.reloads

    @property
    def last_error(self) -> str | None:
        return self._choice().served.live.last_error

    def caption_of(self, image_id: str) -> str | None:
        return self._choice().served.live.caption_of(image_id)

    def thumbnail(self, rel_path: str, image_id: str) -> str | None:
        return self._choice().served.live.thumbnail(rel_path, image_id)

    def page_context(self) -> dict[str, Any]:
        """The page's line chooser: every line, the chosen one, its version, and a note when it lags."""
        choice = self._choice()
        lines = [{"name": n, "version": ln.served.version if ln.served else None}
                 for n, ln in self.lines.lines.items()]
        return {"lines": lines, "line": choice.name, "line_version": choice.served.version,
                "line_note": choice.note, "line_arg": "line=" + quote(choice.name, safe="")}


class SelectLine:
    """Pure ASGI middleware: chooses the request's line (or answers why it cannot) and names it in a header."""

    def __init__(self, app: Any, lines: LiveLines):
        self.app = app
        self.lines = lines

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/api/lines":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")
        asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("line", [None])[0]
        choice, error = self._choose(asked, api)
        if error is not None:
            await _answer(send, api, *error)
            return
        assert choice is not None
        tag = f"{choice.name} v{choice.served.version}".encode()

        async def named(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), (LINE_HEADER.encode(), tag)])
            await send(message)

        token = _CHOICE.set(choice)
        try:
            await self.app(scope, receive, named)
        finally:
            _CHOICE.reset(token)

    def _choose(self, asked: str | None, api: bool) -> tuple[Choice | None, tuple[int, str, str] | None]:
        names = list(self.lines.lines)
        listed = ", ".join(names)
        if asked is None:
            served = self.lines.served_names()
            if api and len(names) != 1:
                return None, (400, "say which line: add line=NAME to the query", f"lines: {listed}")
            if not served:
                return None, (503, "no line can answer yet", "see /api/lines")
            asked = served[0]
        line = self.lines.get(asked)
        if line is None:
            return None, (404, f"no line named {asked!r}", f"lines: {listed}")
        served_now = line.served  # once: the version this whole request uses
        if served_now is None:
            return None, (503, f"line {asked} cannot answer yet: {line.last_error or line.pending}",
                          f"mwa index --line {asked} --store {self.lines.store.root}")
        note = None
        if line.current != served_now.version:
            note = line.last_error or line.pending
        return Choice(asked, served_now, note), None


async def _answer(send: Any, api: bool, status: int, message: str, hint: str) -> None:
    """An error answered by the middleware itself (JSON for the API, a short page otherwise)."""
    if api:
        body, kind = json.dumps({"error": message, "hint": hint}, ensure_ascii=False).encode(), b"application/json"
    else:
        body = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mwa · {html.escape(message)}'
                f'</title></head><body><main><p class="error" id="error"><strong>{html.escape(message)}</strong>'
                f'<br>{html.escape(hint)}</p><p><a href="/">all lines</a></p></main></body></html>').encode()
        kind = b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_lines_app(lines: LiveLines, *, host: str = "127.0.0.1", heatmaps: bool = True) -> Any:
    """`create_app` over the line store, with `SelectLine` innermost and `/api/lines`."""
    from starlette.middleware import Middleware

    from mwa_cli.serve.app import create_app

    dispatch = LineDispatch(lines)
    app = create_app(dispatch, host=host, heatmaps=heatmaps,  # type: ignore[arg-type] - LiveIndex's interface
                     page_context=dispatch.page_context)
    # appended, not add_middleware (which puts it outermost): the host guard and the security headers of
    # create_app wrap its answers too
    app.user_middleware.append(Middleware(SelectLine, lines=lines))

    @app.get("/api/lines")
    def api_lines() -> dict[str, Any]:
        return lines.status()

    return app
