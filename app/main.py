"""The application factory: routers, error handling, limits and start-up."""

import asyncio
import logging
import re
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import health, ladder, runs, trials, verifications
from app.api.instrument import install_metrics
from app.db import Database, storage_error
from app.migrate import head_revision
from app.schemas import FREE_FORM_LEVELS
from app.services.errors import ServiceError
from app.settings import Settings
from app.web import pages
from app.web.pages import render
from app.worker.local import LocalSource
from app.worker.worker import Worker

logger = logging.getLogger("advisor")


class BodySizeLimit:
    """Refuses bodies over ``limit`` bytes with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.message = f"body: request body is larger than the limit of {limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"message": self.message}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI passes an HTTPException raised while reading the body on as is.
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, counting_receive, send)


# An incoming X-Request-ID is kept when it is this plain; else the server makes one.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_of(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContext:
    """Every HTTP response carries an ``X-Request-ID`` (the client's, when sane); an error
    nothing else handled answers JSON (``message``, ``request_id``) and is logged with its
    traceback under that id.

    It answers the error itself rather than letting it reach Starlette's ServerErrorMiddleware,
    which would answer plain text and raise on to the server, which then drops the keep-alive
    connection (and the client's next request on it). Failures of the storage itself map to
    507 (database or disk full) and 503 (database unavailable or busy) here, in one place.
    """

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", ()) if h[0].lower() != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            where = f"{scope.get('method')} {scope.get('path')}"
            if started:
                # Too late to answer: the server ends the response by closing the connection.
                self.logger.error(
                    "error after the response began: %s request_id=%s", where, request_id
                )
                raise
            mapped = storage_error(exc)
            if mapped is not None:
                status, message = mapped
                self.logger.error("%s: %s request_id=%s", where, message, request_id)
            else:
                status = 500
                message = (
                    f"internal server error: the server log has the details under request id "
                    f"{request_id}"
                )
                self.logger.exception(
                    "unexpected error: %s request_id=%s", where, request_id, exc_info=exc
                )
            headers = {"Retry-After": "5"} if status == 503 else None
            response = JSONResponse(
                {"message": message, "request_id": request_id}, status_code=status, headers=headers
            )
            await response(scope, receive, send_with_id)


def _part(part: Any) -> str:
    text = str(part)
    # A key with control characters (NUL, ...) is named with them escaped.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def field_path(loc: Sequence[Any]) -> str:
    """('body', 'epochs', 3, 'valid_loss') -> 'epochs[3].valid_loss'."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    out = ""
    for part in parts:
        if part == "[key]":  # pydantic's marker for an error in a key rather than its value
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{_part(part)}" if out else _part(part))
    return out or (str(loc[0]) if loc else "body")


# A model-level check names the field at the start of its message: "recipe.data.path: ...".
NAMED_FIELD = re.compile(r"^([A-Za-z_][^\s:]*): ")


def validation_message(errors: Sequence[Any]) -> str:
    messages = []
    for err in errors:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        path = field_path(err.get("loc", ()))
        # Model-level checks already name the field in their message.
        messages.append(
            msg if path in ("body", "") and NAMED_FIELD.match(msg) else f"{path}: {msg}"
        )
    return "; ".join(messages)


def located(err: dict[str, Any]) -> dict[str, Any]:
    """FastAPI locates a JSON decode error at a character of the body, which is no field: the
    error is the body's, with that position and the parser's reason in its message."""
    if err.get("type") != "json_invalid":
        return err
    loc = err.get("loc", ())
    at = f" at character {loc[1]}" if len(loc) > 1 else ""
    reason = (err.get("ctx") or {}).get("error")
    why = f" ({reason})" if reason else ""
    return {**err, "loc": ("body",), "msg": f"not valid JSON{at}{why}"}


def is_for_machines(path: str) -> bool:
    """The API and the operators' endpoints answer errors as JSON; pages answer for people."""
    return path.startswith("/api/") or path in ("/metrics", "/readyz", "/healthz")


def allowed_methods(request: Request) -> set[str]:
    """Every method the routes at the request's path declare (a mount declares none). Starlette's
    405 names only those of the first route there, and a path here has a route per method."""
    methods: set[str] = set()
    for context in iter_route_contexts(request.app.routes):
        match, _ = context.matches(request.scope)
        if match is not Match.NONE:
            methods |= context.methods or set()
    return methods


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        if not is_for_machines(request.url.path):
            if exc.status_code == 401:
                return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", 303)
            if exc.status_code == 404:
                return render(request, "not_found.html", status_code=404, message=exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        body: dict[str, Any] = {"message": exc.message}
        if exc.field:
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = exc.headers
        allowed = allowed_methods(request) if exc.status_code == 405 else None
        if allowed:
            headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        return JSONResponse({"message": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [located(e) for e in exc.errors()]
        detail = []
        for e in errors:
            field = field_path(e.get("loc", ()))
            msg = str(e.get("msg")).removeprefix("Value error, ")
            named = NAMED_FIELD.match(msg) if field == "body" else None
            detail.append(
                {
                    "field": named.group(1) if named else field,
                    "message": str(e.get("msg")),
                    "type": e.get("type"),
                }
            )
        return JSONResponse(
            {"message": validation_message(errors), "detail": detail}, status_code=422
        )


DESCRIPTION = f"""\
Request bodies are JSON, taken with strict types: no number from a string (`"5000"`), no boolean
from a number or a string (`0`, `"off"`), no text from anything but a string. JSON does not tell
`5` from `5.0`: a number field takes either, and so does an integer field (a fraction it refuses).
Objects take the keys declared and no other, but for the facts of a run report (`model` and
`data`), which keep any other key as plain JSON, nested at most {FREE_FORM_LEVELS} levels deep.
Query parameters are text, read as the types declared.

What the schemas cannot say, the descriptions do (epochs in order, and after the stored ones when
appended; rows named that exist). Every error answers with the same body (`ErrorOut`); a 422 names
the field to blame.
"""
# JSON Schema's numeric keywords, whose numbers FastAPI's document model keeps as floats.
BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})


def exact_bounds(document: Any) -> None:
    """Writes the document's whole-number bounds back as the integers they are: 2**63 as
    9223372036854775808, not 9.223372036854776e+18, which a reader of the text takes for
    9223372036854776000."""
    todo = [document]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in BOUNDS and isinstance(value, float) and value.is_integer():
                    node[key] = int(value)
                else:
                    todo.append(value)
        elif isinstance(node, list):
            todo.extend(node)


def install_exact_bounds(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        exact_bounds(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def start_embedded_worker(settings: Settings, db: Database) -> tuple[Worker, threading.Thread]:
    worker = Worker(
        LocalSource(db, lease_s=settings.worker_lease_s),
        devices=settings.worker_devices,
        roots=settings.data_roots,
        lease_s=settings.worker_lease_s,
        poll_s=settings.worker_poll_s,
        threads=settings.worker_threads,
    )
    thread = threading.Thread(target=worker.run, name="embedded-worker", daemon=True)
    thread.start()
    return worker, thread


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The database is not touched here: a server whose database is down or not migrated
        # still starts and says so on /readyz. The embedded worker runs in its own thread and
        # imports torch only when it takes its first job.
        embedded = start_embedded_worker(settings, db) if settings.worker == "embedded" else None
        yield
        if embedded is not None:
            worker, thread = embedded
            worker.stop.set()
            # Its trial's next epoch sees the stop and hands the trial back; waited for (within a
            # lease), so that no worker of a stopped app goes on with its database.
            await asyncio.to_thread(thread.join, settings.worker_lease_s)
        db.dispose()

    app = FastAPI(
        title="Overfit Advisor",
        version="1.0.0",
        summary="Diagnoses training curves; answers with the next remedy on the guidance ladder.",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_exact_bounds(app)
    app.state.settings = settings
    app.state.db = db
    app.state.logger = logger
    app.state.migration_head = head_revision()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    # Outside the limits, so it sees every response and every error; the request metrics go
    # outermost of all, to count the answers it makes of errors too.
    app.add_middleware(RequestContext, logger=logger)
    install_metrics(app, db)

    for router in (runs.router, verifications.router, trials.router, ladder.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(health.router)

    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(pages.__file__).parent / "static"), "static")
    return app
