"""The FastAPI app of `mwa serve`: HTML pages rendered on the server (no script at all), a JSON API beside them,
GET only. Every response carries the report's rules: a CSP that forbids scripts and external requests (images are
inline data: URIs), no framing, no referrer, no MIME sniffing; only the Host names of
`mwa_cli.serve.hosts.allowed_hosts` are answered, whatever the bind (a web page cannot reach it through DNS
rebinding)."""

from typing import Any, Callable

from mwa_cli import __version__
from mwa_cli.errors import MwaError
from mwa_cli.serve.hosts import allowed_hosts
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
HEAT_LIMIT = 4   # heat maps for the first results of a text query: each costs 1 + cells² forward passes


def create_app(live: LiveIndex, *, host: str = "127.0.0.1", heatmaps: bool = True,
               allow_hosts: list[str] | None = None, page_context: Callable[[], dict[str, Any]] | None = None):
    """The ASGI app serving `live` (see the module docstring for the rules every response follows).
    `allow_hosts` are Host names answered besides this machine's own (`mwa_cli.serve.hosts`); `page_context`
    adds variables to every page (the line server's line chooser: serve/lines_app.py)."""
    from fastapi import FastAPI
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app = FastAPI(title="mwa serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host, allow_hosts))  # every bind
    _add_security_headers(app)  # added last: outermost, so the host guard's refusals carry the headers too
    queries = Queries(live)
    _add_page_routes(app, queries, Pages(live, queries, heatmaps=heatmaps, page_context=page_context))
    _add_api_routes(app, queries, live)
    return app


def _add_security_headers(app: Any) -> None:
    """Every response gets SECURITY_HEADERS; an unexpected exception becomes one console line and a JSON 500."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

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
    """Refuse a query longer than MAX_QUERY_CHARS and a `top` outside 1..MAX_TOP."""
    from mwa_cli.errors import ConfigError

    if q is not None and len(q) > MAX_QUERY_CHARS:
        raise ConfigError(f"the query is longer than {MAX_QUERY_CHARS} characters", hint="shorten it")
    if not 1 <= top <= MAX_TOP:
        raise ConfigError(f"top must be between 1 and {MAX_TOP} (got {top})")


def _error_body(exc: MwaError) -> dict[str, Any]:
    return {"error": exc.message, "hint": exc.hint}


def _status_of(exc: MwaError) -> int:
    return 404 if "no photo with id" in exc.message else 400 if exc.exit_code == 2 else 422


class Queries:
    """The searches behind the pages and the API, over `live`'s current index: arguments checked first, the
    model used by one query at a time (`live.encode_lock`)."""

    def __init__(self, live: LiveIndex):
        self.live = live

    def text(self, q: str, top: int, nprobe: int | None) -> dict[str, Any]:
        from mwa_cli.search.query import search

        _check(q, top)
        index = self.live.current()
        with self.live.encode_lock:
            return search(index, self.live.model, text=q, top=top, nprobe=nprobe)

    def similar(self, image_id: str, top: int, nprobe: int | None) -> dict[str, Any]:
        from mwa_cli.search.query import similar

        _check(None, top)
        return similar(self.live.current(), image_id, top=top, nprobe=nprobe)

    def add_heatmaps(self, result: dict[str, Any], *, images: bool) -> None:
        """The why-this-match heat maps of a text query's first HEAT_LIMIT photos (`images`: with overlays)."""
        from mwa_cli.search.heatmap import add_heatmaps

        with self.live.encode_lock:
            add_heatmaps(result, self.live.current(), self.live.model, limit=HEAT_LIMIT, images=images)


class Pages:
    """The HTML pages: a result dressed with thumbnails, captions and heat maps, rendered with the template."""

    def __init__(self, live: LiveIndex, queries: Queries, *, heatmaps: bool,
                 page_context: Callable[[], dict[str, Any]] | None):
        self.live, self.queries, self.heatmaps, self.page_context = live, queries, heatmaps, page_context
        self.template = get_template(TEMPLATE)

    def decorate(self, result: dict[str, Any], with_heat: bool) -> dict[str, Any]:
        """Thumbnails, a caption per photo and (for text queries) the why-this-match heat maps, for the page."""
        for hit in result.get("images", []):
            hit["thumb"] = self.live.thumbnail(hit["path"], hit["image_id"]) if hit.get("path") else None
            hit["caption"] = self.live.caption_of(hit["image_id"])
        q = result.get("query") or {}
        if q.get("kind") == "photo" and q.get("path"):
            q["thumb"] = self.live.thumbnail(q["path"], q["image_id"])
        if with_heat and q.get("kind") == "text":
            self.queries.add_heatmaps(result, images=True)
        return result

    def render(self, request: Any, result: dict[str, Any] | None, q: str = "", error: dict | None = None,
               status: int = 200):
        from fastapi.responses import HTMLResponse

        index = self.live.current()
        lang = pick_language(request.headers.get("accept-language"))
        html = self.template.render(result=result, q=q, error=error, index=index.meta, n_images=index.n_images,
                                    index_path=str(index.path), mwa_version=__version__, heatmaps=self.heatmaps,
                                    lang=lang, t=LABELS[lang], **(self.page_context() if self.page_context else {}))
        return HTMLResponse(html, status_code=status)


def _add_page_routes(app: Any, queries: Queries, pages: Pages) -> None:
    """`/` (a text query) and `/photo/{image_id}` (photos like this one): HTML, an error shown on the page."""
    from fastapi import Request
    from fastapi.responses import HTMLResponse

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, q: str = "", top: int = 20, nprobe: int | None = None):
        if not q.strip():
            return pages.render(request, None)
        try:
            result = pages.decorate(queries.text(q, top, nprobe), pages.heatmaps)
        except MwaError as exc:
            return pages.render(request, None, q=q, error=_error_body(exc), status=_status_of(exc))
        return pages.render(request, result, q=q)

    @app.get("/photo/{image_id}", response_class=HTMLResponse)
    def photo(request: Request, image_id: str, top: int = 20, nprobe: int | None = None):
        try:
            result = pages.decorate(queries.similar(image_id, top, nprobe), False)
        except MwaError as exc:
            return pages.render(request, None, error=_error_body(exc), status=_status_of(exc))
        return pages.render(request, result)


def _add_api_routes(app: Any, queries: Queries, live: LiveIndex) -> None:
    """The JSON API: `/api/search`, `/api/photo/{image_id}` and `/api/status`; an error is a JSON body."""
    from fastapi import Query
    from fastapi.responses import JSONResponse

    @app.get("/api/search")
    def api_search(q: str = Query(..., description="words, English or Japanese"), top: int = 10,
                   nprobe: int | None = None, heatmap: bool = False):
        try:
            result = queries.text(q, top, nprobe)
            if heatmap:
                queries.add_heatmaps(result, images=False)
            return result
        except MwaError as exc:
            return JSONResponse(_error_body(exc), status_code=_status_of(exc))

    @app.get("/api/photo/{image_id}")
    def api_photo(image_id: str, top: int = 10, nprobe: int | None = None):
        try:
            return queries.similar(image_id, top, nprobe)
        except MwaError as exc:
            return JSONResponse(_error_body(exc), status_code=_status_of(exc))

    @app.get("/api/status")
    def api_status():
        index = live.current()
        return {"index": str(index.path), "generation": index.meta.get("generation"), "images": index.n_images,
                "captions": 0 if index.captions is None else len(index.captions), "method": index.meta.get("method"),
                "approx": index.meta.get("approx"), "reloads": live.reloads, "last_reload_error": live.last_error,
                "mwa_version": __version__}
