"""Liveness, readiness and Prometheus metrics."""

import hmac

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from app.api.deps import SettingsDep, bearer_token, require_token
from app.api.errors import errors
from app.db import Database
from app.migrate import current_revision
from app.schemas import ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", responses=errors(500))
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _unavailable(database: str, **more: str | None) -> JSONResponse:
    return JSONResponse({"status": "unavailable", "database": database, **more}, status_code=503)


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={
        503: {"model": ReadyOut, "description": "Not ready; the answer says why."},
        **errors(500),
    },
)
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


async def metrics_access(request: Request, settings: SettingsDep) -> None:
    """``ADVISOR_METRICS_TOKEN``, when set, always opens /metrics; otherwise, when auth is
    required, a project's token must be sent."""
    token = bearer_token(request)
    expected = settings.metrics_token
    if (
        token is not None
        and expected is not None
        and hmac.compare_digest(token.encode(), expected.encode())
    ):
        return
    await require_token(request, settings)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(metrics_access)],
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
        **errors(401, 500, 503, 507),
    },
)
def metrics(request: Request) -> Response:
    """Prometheus text format, across all projects: HTTP requests of this server (of all its
    processes with ``PROMETHEUS_MULTIPROC_DIR``) by route template, method and status, and what
    the database holds: runs by verdict, verification jobs by status, queue waits, job and trial
    durations, heartbeat ages of the workers holding jobs, epochs per second by device.

    When auth is required, send a project's token or ``ADVISOR_METRICS_TOKEN`` as Bearer."""
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
