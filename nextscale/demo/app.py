"""The Starlette app: one static page and a small JSON API.

    GET  /              the page (static/index.html; a Content-Security-Policy lets it load nothing from elsewhere)
    GET  /static/…      its script and style sheet
    GET  /api/info      the model's facts: its refiner (or null), image size, token grid, classes, default settings,
                        limits, example images
    POST /api/image     {"image": data URL} → the picture fitted to the model ({"image": data URL, "note": …})
    POST /api/sample    {"classes": [...], "per_class", "seed", "cfg", "top_k", "top_p", "more_smooth", "previews",
                         "handover_scale" (with a refiner)}
    POST /api/edit      {"image", "region", "mode", "class", "samples", "seed", "cfg", "top_k", "top_p", …}

Sampling and editing answer with a stream of JSON lines (application/x-ndjson), one event per line (see engine.py),
so the previews after each scale reach the page while the next scale is drawn. A bad request is answered before any
work with a 4xx and {"error": "one line"}; an unexpected failure with a 500 and a one-line message (the traceback
goes to the server's log, never to the page).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nextscale.demo.engine import DemoEngine, Job
from nextscale.demo.requests import DemoRequestError, parse_edit, parse_sample, parse_upload
from nextscale.errors import UsageError

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
# the page may load only what this server serves (and the data: URLs of the images it is sent)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class SecurityHeaders:
    """Adds the Content-Security-Policy and nosniff headers to every response that lacks them: the page at / and
    the same file at /static/index.html must be equally confined."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                headers.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def error_response(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


async def read_json(request: Request, limit: int):
    """The request body as JSON, refusing bodies over `limit` bytes (413) and anything that is not JSON (400)."""
    declared = request.headers.get("content-length", "")
    too_large = DemoRequestError(f"the request is larger than this server accepts ({limit // 1024 // 1024} MB)", 413)
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DemoRequestError("the request body is not valid JSON") from None
    except RecursionError:  # the parser recurses once per nesting level: no request of this API nests deeply
        raise DemoRequestError("the request body is nested too deeply to be one of this API's requests") from None


def stream_job(job: Job) -> StreamingResponse:
    """Run `job` in a worker thread; its events go out as JSON lines as soon as they are emitted."""
    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            job.run(events.put)
        except UsageError as err:  # a user mistake that only the library could see
            events.put({"event": "error", "message": str(err)})
        except Exception:
            logger.exception("demo: the job failed")
            events.put({"event": "error", "message": "internal error while drawing the images (see the server log)"})
        finally:
            events.put(None)

    threading.Thread(target=work, name="nextscale-demo-job", daemon=True).start()

    def lines():
        while (event := events.get()) is not None:
            yield json.dumps(event) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=NO_STORE)


def build_app(engine: DemoEngine, allowed_hosts: list[str] | None = None) -> Starlette:
    """The app serving `engine`. `allowed_hosts` (Host headers answered; default: loopback names only) keeps other
    web sites from reaching a loopback server through DNS rebinding."""
    limit = engine.limits.max_body_bytes

    async def page(request: Request):
        headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, **NO_STORE}
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    async def info(request: Request):
        return JSONResponse(await run_in_threadpool(engine.info), headers=NO_STORE)

    async def upload(request: Request):
        body = await read_json(request, limit)
        image = await run_in_threadpool(parse_upload, body)
        return JSONResponse(await run_in_threadpool(engine.fit_upload, image), headers=NO_STORE)

    async def sample(request: Request):
        body = await read_json(request, limit)
        parsed = parse_sample(body, engine.model, engine.sample_defaults, engine.limits)
        return stream_job(engine.prepare_sample(parsed))

    async def edit(request: Request):
        body = await read_json(request, limit)
        parsed = await run_in_threadpool(parse_edit, body, engine.model, engine.edit_defaults, engine.limits)
        return stream_job(await run_in_threadpool(engine.prepare_edit, parsed))

    async def bad_request(request: Request, err: DemoRequestError):
        return error_response(str(err), err.status)

    async def http_error(request: Request, err: HTTPException):
        return error_response(str(err.detail), err.status_code)

    async def server_error(request: Request, err: Exception):
        logger.error("demo: %s %s failed", request.method, request.url.path, exc_info=err)
        return error_response("internal error (see the server log)", 500)

    routes = [
        Route("/", page),
        Route("/api/info", info),
        Route("/api/image", upload, methods=["POST"]),
        Route("/api/sample", sample, methods=["POST"]),
        Route("/api/edit", edit, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_NAMES),
    ]
    handlers = {DemoRequestError: bad_request, HTTPException: http_error, Exception: server_error}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
