"""Liveness, readiness and Prometheus metrics."""

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from app.api.deps import SettingsDep, bearer_token, token_scope
from app.api.errors import errors
from app.db import Database
from app.migrate import current_revision
from app.schemas import ReadyOut
from app.services.metrics import DatabaseCollector, Rows

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


async def metrics_view(request: Request, settings: SettingsDep) -> Rows | None:
    """Whose figures /metrics shows: everything (None) to ``ADVISOR_METRICS_TOKEN``, and to
    anyone while auth is off (on loopback, where every request acts for every project anyway);
    with auth required, to a project's token, that project's rows only."""
    token = bearer_token(request)
    expected = settings.metrics_token
    if (
        token is not None
        and expected is not None
        and hmac.compare_digest(token.encode(), expected.encode())
    ):
        return None
    if not settings.auth_required:
        return None
    return Rows((await token_scope(request)).project_id)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
        **errors(401, 500, 503, 507),
    },
)
def metrics(request: Request, rows: Annotated[Rows | None, Depends(metrics_view)]) -> Response:
    """Prometheus text format. With ``ADVISOR_METRICS_TOKEN`` (or while auth is off), across
    all projects: HTTP requests of this server (of all its processes with
    ``PROMETHEUS_MULTIPROC_DIR``) by route template, method and status, and what the database
    holds: runs by verdict, verification jobs by status, queue waits, job and trial durations,
    heartbeat ages of the workers holding jobs, epochs per second by device.

    With auth required, a project's token (Bearer) shows the database's figures of that project
    only: its runs, its verifications, the trials they trained and the workers holding them. The
    HTTP request series are left out, since they count every project's requests."""
    registry: CollectorRegistry = request.app.state.metrics
    if rows is not None:
        registry = CollectorRegistry()
        registry.register(DatabaseCollector(request.app.state.db, rows))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
