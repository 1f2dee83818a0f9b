"""What every daemon's pages share: serving them, their security headers, CORS for cross-port calls.

Pages are plain HTML + vanilla JS + CSS with no build step (README, "Pages"). A daemon
keeps its own files in ``<daemon>/web/``; what all pages share (``tf.css``, ``tf.js``: the
fetch/login helper, ``seatstream.js``-style SSE clients, vendored libraries) lives once in
``deploy/runtime/web/assets/``. Both are served flat under ``/assets/{name}`` (the daemon's
own file wins over a shared one of the same name); pages are served at the paths the daemon
names. Files are read once at start-up.

Headers, on every page and asset:

- ``Content-Security-Policy``: scripts, styles, images and connections from this origin only
  (plus the origins the daemon names in ``connect``, e.g. billing's API on another port);
  no inline script or style, no plugins, no framing. A page therefore passes values to its
  script in ``<meta name="tf-...">`` tags that :class:`Pages` fills in (``{{name}}``).
- ``Cache-Control``: pages ``no-cache`` (always revalidated: a deploy shows at once);
  assets ``max-age=300`` with a strong ``ETag`` (a 304 for ``If-None-Match``).
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``.

The routes must be declared in the daemon's OpenAPI document like any other (the auth
middleware refuses undeclared routes): :meth:`Pages.openapi_paths` gives those entries.

:func:`cors_middleware`: a daemon whose API a page on another origin calls (billing: sign-up,
log-in, orders, pay) answers those origins' requests and preflights. Credentials travel
only as ``Authorization: Bearer`` headers, never cookies, so ``Allow-Credentials`` is never
sent and a foreign page cannot ride on a browser's ambient credentials.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

SHARED_ASSETS = Path(__file__).parent / "assets"
ASSET_MAX_AGE = 300
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
         ".png": "image/png", ".txt": "text/plain"}


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: str
    etag: str


def _load(path: Path) -> _File:
    body = path.read_bytes()
    kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind.endswith("+xml"):
        kind += "; charset=utf-8"
    return _File(body, kind, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def csp(connect: Iterable[str] = ()) -> str:
    sources = " ".join(["'self'", *connect])
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {sources}; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")


@dataclass(frozen=True)
class PageSettings:
    """What a daemon's pages are told at serve time: ``values`` fill ``{{name}}`` in the HTML
    (HTML-escaped, e.g. another daemon's public URL); ``connect`` names other origins the pages'
    scripts may call (the CSP's connect-src). Put in ``app[PAGE_SETTINGS]``."""

    values: Mapping[str, str]
    connect: tuple[str, ...] = ()


PAGE_SETTINGS = web.AppKey("ticketflow_page_settings", PageSettings)


class Pages:
    """A daemon's pages: ``pages`` maps a route path to an HTML file in ``own`` (the daemon's web dir)."""

    def __init__(self, own: Path, pages: Mapping[str, str]) -> None:
        self.assets: dict[str, _File] = {}
        for directory in (SHARED_ASSETS, own / "assets"):
            if directory.is_dir():
                for path in sorted(directory.iterdir()):
                    if path.is_file() and not path.name.startswith("."):
                        self.assets[path.name] = _load(path)
        self.templates = {route: (own / name).read_text(encoding="utf-8") for route, name in pages.items()}
        self._rendered: dict[str, _File] = {}
        self._headers: dict[str, str] | None = None

    def _settings(self, request: web.Request) -> PageSettings:
        return request.config_dict.get(PAGE_SETTINGS) or PageSettings({})

    def _page(self, request: web.Request, route: str) -> _File:
        file = self._rendered.get(route)
        if file is None:
            text = self.templates[route]
            for key, value in self._settings(request).values.items():
                text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
            file = self._rendered[route] = _load_text(text)
        return file

    def _answer(self, request: web.Request, file: _File, cache: str) -> web.Response:
        if self._headers is None:
            self._headers = {"Content-Security-Policy": csp(self._settings(request).connect),
                             "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
        headers = {**self._headers, "Cache-Control": cache, "ETag": file.etag}
        if request.headers.get("If-None-Match") == file.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=file.body, headers={**headers, "Content-Type": file.content_type})

    def routes(self) -> list[web.RouteDef]:
        def page(route: str):
            async def handler(request: web.Request) -> web.Response:
                return self._answer(request, self._page(request, route), "no-cache")
            return handler

        async def asset(request: web.Request) -> web.Response:
            file = self.assets.get(request.match_info["name"])
            if file is None:
                raise web.HTTPNotFound()
            return self._answer(request, file, f"public, max-age={ASSET_MAX_AGE}")

        return [*(web.get(route, page(route)) for route in self.templates), web.get("/assets/{name}", asset)]


def _load_text(text: str) -> _File:
    body = text.encode("utf-8")
    return _File(body, "text/html; charset=utf-8", '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def openapi_paths(titles: Mapping[str, str]) -> dict[str, Any]:
    """OpenAPI entries for pages (``titles``: route -> what the page shows) and ``/assets/{name}``.

    A function of the titles alone, so a daemon's openapi.py can build its document without
    reading any file.
    """
    unchanged = {"description": "not modified (If-None-Match matched the ETag)"}

    def parameters(route: str) -> list[dict[str, Any]]:
        return [{"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                for part in route.split("/") if part.startswith("{")]

    paths: dict[str, Any] = {
        route: {"get": {"summary": f"Page: {title}", "security": [], "parameters": parameters(route),
                        "responses": {"200": {"description": "the page",
                                              "content": {"text/html": {"schema": {"type": "string"}}}},
                                      "304": unchanged}}}
        for route, title in titles.items()}
    paths["/assets/{name}"] = {"get": {
        "summary": "A page's script, style sheet or vendored library", "security": [],
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the file"}, "304": unchanged,
                      "404": {"description": "no such asset (NOT_FOUND)",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}}
    return paths


CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key"
CORS_EXPOSE = "Retry-After, WWW-Authenticate, Location"
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_MAX_AGE = "600"


def cors_middleware(origins: Iterable[str]):
    """Let pages served from ``origins`` call this daemon's API (preflights answered here, 204).

    Any other origin gets no CORS headers: the browser then refuses to show it the answer.
    ``Vary: Origin`` always, so a shared cache never mixes them up.
    """
    allowed = frozenset(o.rstrip("/") for o in origins if o)

    @web.middleware
    async def middleware(request: web.Request, handler):
        origin = request.headers.get("Origin")
        preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        if preflight:
            response: web.StreamResponse = web.Response(status=204)
            if origin in allowed:
                response.headers.update({"Access-Control-Allow-Methods": CORS_METHODS,
                                         "Access-Control-Allow-Headers": CORS_HEADERS,
                                         "Access-Control-Max-Age": CORS_MAX_AGE})
        else:
            response = await handler(request)
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
        response.headers.add("Vary", "Origin")
        return response

    return middleware
