"""Every route of the web app. Handlers parse, call one Toolbox method, and format; no algorithms here."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from deepvis.core.errors import DeepvisError, one_line
from deepvis.store import Store
from deepvis.apps.server.compute import Compute
from deepvis.apps.server.inputs import InputNotFound
from deepvis.apps.server.requests import ViewRequest
from deepvis.apps.server.toolbox import EXPORT_URL, STORE_URL, Toolbox

STATIC_ROOT = Path(str(resources.files("deepvis.apps.server").joinpath("static")))
#: Largest view request body (a small JSON object).
MAX_VIEW_BYTES = 64 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` (unless set) to every HTTP response: a plain ASGI middleware, which costs
    nothing per request (``BaseHTTPMiddleware`` runs each one in an extra task through memory streams)."""

    def __init__(self, app):
        self.app = app
        self.headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in SECURITY_HEADERS.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request, limit: int, what: str = "upload") -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} of {int(declared):,} bytes is over the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{what} is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(toolbox: Toolbox, compute: Compute | None = None) -> Starlette:
    """The Starlette app serving one :class:`Toolbox`; all model work runs on ``compute``'s one thread (the one
    that loaded the model, ideally: see :mod:`.compute`)."""
    compute = compute or Compute()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_ROOT / "index.html")

    async def info(request: Request) -> Response:
        return JSONResponse(toolbox.info())

    async def input_file(request: Request) -> Response:
        item = await compute(toolbox.input_from_file, request.path_params["index"],
                                       request.query_params.get("resize"))
        return JSONResponse(item.info())

    async def input_upload(request: Request) -> Response:
        data = await _body(request, toolbox.max_upload_bytes)
        if not data:
            return _error("the upload is empty")
        name = request.query_params.get("name", "upload")[:200]
        tab = request.query_params.get("tab") if request.url.path.endswith("/frame") else None
        item = await compute(toolbox.input_from_bytes, data, name, request.query_params.get("resize"), tab)
        return JSONResponse(item.info())

    async def input_image(request: Request) -> Response:
        png = await compute(toolbox.input_png, request.path_params["input"])
        return Response(png, media_type="image/png")

    async def view(request: Request) -> Response:
        body = await _body(request, MAX_VIEW_BYTES, "view request")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return _error("the view request must be JSON")
        result = await compute(toolbox.view, ViewRequest.from_json(data))
        return JSONResponse(result)

    async def unit(request: Request) -> Response:
        layer = request.query_params.get("layer", "")
        channel = request.query_params.get("channel", "")
        if not channel.isdigit():
            return _error(f"channel must be a non-negative integer, got {channel!r}")
        return JSONResponse(toolbox.unit_images(layer, int(channel)))

    async def layer(request: Request) -> Response:
        return JSONResponse(toolbox.layer_sprites(request.query_params.get("layer", "")))

    def file_under(root: Path, path: str) -> Response:
        try:  # symlinks are resolved: a link to a file outside the root is not served
            target = (root / path).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                return _error("not found", 404)
        except (OSError, ValueError):  # a name too long, a NUL byte...
            return _error("not found", 404)
        return FileResponse(target)

    async def store_file(request: Request) -> Response:
        if toolbox.store is None:
            return _error("no store: start the server with --store STORE", 404)
        return file_under(toolbox.store, request.path_params["path"])

    async def export_file(request: Request) -> Response:  # the store's exported site (deepvis export), from its root
        if toolbox.store is None:
            return _error("no store: start the server with --store STORE", 404)
        return file_under(Store(toolbox.store).site_path.resolve(), request.path_params["path"])

    async def deepvis_error(request: Request, exc: DeepvisError) -> Response:
        return _error(one_line(exc), 404 if isinstance(exc, InputNotFound) else 400)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(str(exc.detail), exc.status_code)

    async def internal_error(request: Request, exc: Exception) -> Response:  # a bug: still a JSON message
        return _error(f"internal error: {type(exc).__name__}: {one_line(exc, 300)}", 500)

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/inputs/file/{index:int}", input_file, methods=["POST"]),
        Route("/api/inputs/upload", input_upload, methods=["POST"]),
        Route("/api/inputs/frame", input_upload, methods=["POST"]),
        Route("/api/inputs/{input}/image.png", input_image),
        Route("/api/view", view, methods=["POST"]),
        Route("/api/unit", unit),
        Route("/api/layer", layer),
        Route(STORE_URL + "{path:path}", store_file),
        Route(EXPORT_URL + "{path:path}", export_file),
        Mount("/static", StaticFiles(directory=STATIC_ROOT), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders)],
                     exception_handlers={DeepvisError: deepvis_error,
                                         HTTPException: http_error, Exception: internal_error})
