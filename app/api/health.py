"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from app.api.deps import SessionDep
from app.migrate import current_revision
from app.services.metrics import prometheus_text

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and its schema is at the migration head."""
    head: str = request.app.state.migration_head
    try:
        current = current_revision(request.app.state.db.engine)
    except Exception as exc:  # any database failure means not ready, and says why
        request.app.state.logger.warning("readiness check failed: %s", exc)
        return JSONResponse(
            {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"},
            status_code=503,
        )
    ok = current == head
    return JSONResponse(
        {
            "status": "ok" if ok else "unavailable",
            "database": "reachable",
            "revision": current,
            "head": head,
        },
        status_code=200 if ok else 503,
    )


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(session: SessionDep) -> PlainTextResponse:
    """Prometheus text format: runs by verdict, verification jobs by status."""
    return PlainTextResponse(prometheus_text(session), media_type="text/plain; version=0.0.4")
