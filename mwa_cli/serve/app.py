"""The FastAPI app of `mwa serve`: HTML pages rendered on the server (no script at all), a JSON API beside them,
GET only. Every response carries the report's rules: a CSP that forbids scripts and external requests (images are
inline data: URIs), no framing, no referrer, no MIME sniffing; only loopback host names are answered unless the
server was bound elsewhere (so a web page cannot reach it through DNS rebinding)."""

from typing import Any, Callable

from mwa_cli import __version__
from mwa_cli.errors import MwaError
from mwa_cli.serve.labels import LABELS, pick_language
from mwa_cli.serve.state import LiveIndex
from mwa_cli.templating import get_template

TEMPLATE = "serve.html.j2"
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
MAX_TOP = 100
MAX_QUERY_CHARS = 500
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
HEAT_LIMIT = 4   # heat maps for the first results of a text query: each costs 1 + cells² forward passes


def create_app(live: LiveIndex, *, host: str = "127.0.0.1", heatmaps: bool = True,
               page_context: Callable[[], dict[str, Any]] | None = None):
    """The ASGI app serving `live` (see the module docstring for the rules every response follows).
    `page_context` adds variables to every page (the line server's line chooser: serve/lines_app.py)."""
    from fastapi import FastAPI, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from mwa_cli.search.query import search, similar

    app = FastAPI(title="mwa serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    allowed = LOOPBACK_NAMES + ([host] if host not in LOOPBACK_NAMES else [])
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["*"] if host in ("0.0.0.0", "::") else allowed)
    template = get_template(TEMPLATE)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        try:
            response = await call_next(request)
        except Exception as exc:  # noqa: BLE001 - one line in the console, a clear answer to the client
            import sys

            print(f"mwa serve: internal error on {request.url.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            response = JSONResponse({"error": f"internal error: {type(exc).__name__}",
                                     "hint": "see the server's console; please report it"}, status_code=500)
        response.headers.update(SECURITY_HEADERS)
        return response

    def _check(q: str | None, top: int) -> None:
        from mwa_cli.errors import ConfigError

        if q is not None and len(q) > MAX_QUERY_CHARS:
            raise ConfigError(f"the query is longer than {MAX_QUERY_CHARS} characters", hint="shorten it")
        if not 1 <= top <= MAX_TOP:
            raise ConfigError(f"top must be between 1 and {MAX_TOP} (got {top})")

    def _text(q: str, top: int, nprobe: int | None) -> dict[str, Any]:
        _check(q, top)
        index = live.current()
        with live.encode_lock:
            return search(index, live.model, text=q, top=top, nprobe=nprobe)

    def _similar(image_id: str, top: int, nprobe: int | None) -> dict[str, Any]:
        _check(None, top)
        return similar(live.current(), image_id, top=top, nprobe=nprobe)

    def _decorate(result: dict[str, Any], with_heat: bool) -> dict[str, Any]:
        """Thumbnails, a caption per photo and (for text queries) the why-this-match heat maps, for the page."""
        for hit in result.get("images", []):
            hit["thumb"] = live.thumbnail(hit["path"], hit["image_id"]) if hit.get("path") else None
            hit["caption"] = live.caption_of(hit["image_id"])
        q = result.get("query") or {}
        if q.get("kind") == "photo" and q.get("path"):
            q["thumb"] = live.thumbnail(q["path"], q["image_id"])
        if with_heat and q.get("kind") == "text":
            from mwa_cli.search.heatmap import add_heatmaps

            with live.encode_lock:
                add_heatmaps(result, live.current(), live.model, limit=HEAT_LIMIT)
        return result

    def _page(request: Request, result: dict[str, Any] | None, q: str = "", error: dict | None = None,
              status: int = 200):
        index = live.current()
        lang = pick_language(request.headers.get("accept-language"))
        html = template.render(result=result, q=q, error=error, index=index.meta, n_images=index.n_images,
                               index_path=str(index.path), mwa_version=__version__, heatmaps=heatmaps,
                               lang=lang, t=LABELS[lang], **(page_context() if page_context else {}))
        return HTMLResponse(html, status_code=status)

    def _error_body(exc: MwaError) -> dict[str, Any]:
        return {"error": exc.message, "hint": exc.hint}

    def _status_of(exc: MwaError) -> int:
        return 404 if "no photo with id" in exc.message else 400 if exc.exit_code == 2 else 422

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, q: str = "", top: int = 20, nprobe: int | None = None):
        if not q.strip():
            return _page(request, None)
        try:
            result = _decorate(_text(q, top, nprobe), heatmaps)
        except MwaError as exc:
            return _page(request, None, q=q, error=_error_body(exc), status=_status_of(exc))
        return _page(request, result, q=q)

    @app.get("/photo/{image_id}", response_class=HTMLResponse)
    def photo(request: Request, image_id: str, top: int = 20, nprobe: int | None = None):
        try:
            result = _decorate(_similar(image_id, top, nprobe), False)
        except MwaError as exc:
            return _page(request, None, error=_error_body(exc), status=_status_of(exc))
        return _page(request, result)

    @app.get("/api/search")
    def api_search(q: str = Query(..., description="words, English or Japanese"), top: int = 10,
                   nprobe: int | None = None, heatmap: bool = False):
        try:
            result = _text(q, top, nprobe)
            if heatmap:
                from mwa_cli.search.heatmap import add_heatmaps

                with live.encode_lock:
                    add_heatmaps(result, live.current(), live.model, limit=HEAT_LIMIT, images=False)
            return result
        except MwaError as exc:
            return JSONResponse(_error_body(exc), status_code=_status_of(exc))

    @app.get("/api/photo/{image_id}")
    def api_photo(image_id: str, top: int = 10, nprobe: int | None = None):
        try:
            return _similar(image_id, top, nprobe)
        except MwaError as exc:
            return JSONResponse(_error_body(exc), status_code=_status_of(exc))

    @app.get("/api/status")
    def api_status():
        index = live.current()
        return {"index": str(index.path), "generation": index.meta.get("generation"), "images": index.n_images,
                "captions": 0 if index.captions is None else len(index.captions), "method": index.meta.get("method"),
                "approx": index.meta.get("approx"), "reloads": live.reloads, "last_reload_error": live.last_error,
                "mwa_version": __version__}

    return app

