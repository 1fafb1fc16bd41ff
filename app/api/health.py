"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from app.api.deps import SessionDep, require_token
from app.db import Database
from app.migrate import current_revision
from app.services.metrics import prometheus_text

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _unavailable(database: str, **more: str | None) -> JSONResponse:
    return JSONResponse({"status": "unavailable", "database": database, **more}, status_code=503)


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers, its schema is at the migration head and writes are
    not failing for want of space (after a write failed so, the storage is probed until it
    has room again). A SQLite database's folder must exist and be writable."""
    head: str = request.app.state.migration_head
    db: Database = request.app.state.db
    logger = request.app.state.logger
    folder = db.folder_problem()
    if folder is not None:
        logger.warning("readiness check failed: %s", folder)
        return _unavailable(f"unusable: {folder}", reason=folder)
    try:
        current = current_revision(db.engine)
    except Exception as exc:  # any database failure means not ready, and says why
        logger.warning("readiness check failed: %s", exc)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return _unavailable(
            f"unreachable: {type(exc).__name__}", reason=reason[0] if reason else None
        )
    if current != head:
        return _unavailable("reachable", revision=current, head=head)
    try:
        storage = db.storage_problem()
    except Exception as exc:
        logger.warning("readiness check failed: %s", exc)
        storage = f"unknown: {type(exc).__name__}"
    if storage is not None:
        logger.warning("readiness check failed: storage %s", storage)
        return _unavailable("reachable", revision=current, head=head, storage=storage)
    return JSONResponse(
        {
            "status": "ok",
            "database": "reachable",
            "revision": current,
            "head": head,
            "storage": "ok",
        }
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[Depends(require_token)],
    responses={401: {"description": "Auth is required and no valid API token was sent."}},
)
def metrics(session: SessionDep) -> PlainTextResponse:
    """Prometheus text format: runs by verdict, verification jobs by status, across all
    projects. When auth is required, any valid project token must be sent (Bearer)."""
    return PlainTextResponse(prometheus_text(session), media_type="text/plain; version=0.0.4")
