"""The application factory: routers, error handling, limits and start-up."""

import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import health, ladder, runs, verifications
from app.db import Database
from app.migrate import head_revision
from app.services.errors import ServiceError
from app.settings import Settings
from app.web import pages
from app.web.pages import render
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


def field_path(loc: Sequence[Any]) -> str:
    """('body', 'epochs', 3, 'valid_loss') -> 'epochs[3].valid_loss'."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path") else list(loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or (str(loc[0]) if loc else "body")


def validation_message(errors: Sequence[Any]) -> str:
    messages = []
    for err in errors:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        path = field_path(err.get("loc", ()))
        # Model-level checks already name the field in their message.
        messages.append(msg if path in ("body", "") and ":" in msg else f"{path}: {msg}")
    return "; ".join(messages)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        if not request.url.path.startswith("/api/"):
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
        return JSONResponse(
            {"message": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        detail = [
            {
                "field": field_path(e.get("loc", ())),
                "message": str(e.get("msg")),
                "type": e.get("type"),
            }
            for e in errors
        ]
        return JSONResponse(
            {"message": validation_message(errors), "detail": detail}, status_code=422
        )


def start_embedded_worker(settings: Settings, db: Database) -> Worker:
    worker = Worker(
        db,
        device=settings.worker_device,
        roots=settings.data_roots,
        lease_s=settings.worker_lease_s,
        poll_s=settings.worker_poll_s,
    )
    threading.Thread(target=worker.run, name="embedded-worker", daemon=True).start()
    return worker


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The database is not touched here: a server whose database is down or not migrated
        # still starts and says so on /readyz. The embedded worker runs in its own thread and
        # imports torch only when it takes its first job.
        worker = start_embedded_worker(settings, db) if settings.worker == "embedded" else None
        yield
        if worker is not None:
            worker.stop.set()
        db.dispose()

    app = FastAPI(
        title="Overfit Advisor",
        version="1.0.0",
        summary="Diagnoses training curves; answers with the next remedy on the guidance ladder.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.logger = logger
    app.state.migration_head = head_revision()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)

    for router in (runs.router, verifications.router, ladder.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(health.router)

    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(pages.__file__).parent / "static"), "static")
    return app
