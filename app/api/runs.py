"""/api/v1/runs: report runs, append epochs, browse history and lineage."""

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, status

from app.api.deps import ScopeDep, SessionDep, SettingsDep
from app.api.errors import API_ERRORS
from app.api.json import FastJSON, OrjsonRoute
from app.schemas import (
    ID_MAX,
    Cursor,
    EpochsIn,
    ErrorOut,
    Lineage,
    RunCreate,
    RunFilters,
    RunOut,
    RunPage,
)
from app.services import runs as service
from app.services.errors import Forbidden
from app.services.projects import project_by_name

router = APIRouter(prefix="/runs", tags=["runs"], route_class=OrjsonRoute, responses=API_ERRORS)

# Out of the id range (1 .. 2**31-1) answers 422 naming the parameter, on both backends.
RunId = Annotated[int, Path(ge=1, le=ID_MAX, description="A run id (1 .. 2147483647).")]


def _project(session: SessionDep, scope: ScopeDep, name: str | None) -> tuple[int, str]:
    name = name or scope.project_name
    if name == scope.project_name:
        return scope.project_id, name
    if not scope.sees_all:
        raise Forbidden(f"this token is for project '{scope.project_name}'", field="project")
    return project_by_name(session, name).id, name


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RunOut,
    responses={
        200: {"model": RunOut, "description": "The run this Idempotency-Key created before."},
        422: {
            "model": ErrorOut,
            "description": "A parameter or the body is invalid (the message names the field), "
            "or the Idempotency-Key was already used for a request with another body "
            "(field 'idempotency-key'): nothing is stored.",
        },
    },
)
def create_run(
    body: RunCreate,
    session: SessionDep,
    scope: ScopeDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=64,
            pattern=r"^[!-~]+$",
            description="Makes the request safe to retry: the same key with the same body "
            "answers the run it created the first time (200 instead of 201); with another body, "
            "422.",
        ),
    ] = None,
) -> FastJSON:
    """Store a training-run report; the answer carries its diagnosis and the next remedy."""
    project = _project(session, scope, body.project)
    run, created = service.create_run_once(
        session,
        project,
        body,
        key=idempotency_key,
        max_epochs=settings.max_epochs,
        data_roots=settings.data_roots,
        shared_evidence=settings.shared_evidence,
    )
    session.commit()
    return FastJSON(service.run_payload(run), status_code=201 if created else 200)


@router.post("/{run_id}/epochs", response_model=RunOut)
def append_epochs(
    run_id: RunId,
    body: EpochsIn,
    session: SessionDep,
    scope: ScopeDep,
    settings: SettingsDep,
    tail: Annotated[
        int | None,
        Query(
            ge=0,
            le=ID_MAX,
            description="Answer only the run's last `tail` epochs in `epochs` (`n_epochs` still "
            "counts them all, and the diagnosis reads them all): a callback appending one "
            "evaluation at a time needs the diagnosis, not the whole run back at every one.",
        ),
    ] = None,
) -> FastJSON:
    """Append epochs to a run in progress; the diagnosis and recommendation are recomputed."""
    run = service.run_to_append(session, scope, run_id)
    updated = service.append_epochs(
        session,
        run,
        body.epochs,
        max_epochs=settings.max_epochs,
        shared_evidence=settings.shared_evidence,
    )
    session.commit()
    if tail is not None:
        updated["epochs"] = updated["epochs"][max(0, len(updated["epochs"]) - tail) :]
    return FastJSON(service.run_payload(updated))


@router.post("/{run_id}/finish", response_model=RunOut)
def finish_run(
    run_id: RunId, session: SessionDep, scope: ScopeDep, settings: SettingsDep
) -> FastJSON:
    """Training is over: the run is diagnosed as finished, all its evaluations judged at once,
    not as the last look of a run still training (which waits a look to confirm a signal that
    just got worse). The callbacks call this when training ends without a live stop."""
    run = service.get_run(session, scope, run_id)
    finished = service.finish_run(session, run, shared_evidence=settings.shared_evidence)
    session.commit()
    return FastJSON(service.run_payload(finished))


@router.get("", response_model=RunPage)
def list_runs(
    session: SessionDep,
    scope: ScopeDep,
    filters: Annotated[RunFilters, Query()],
    cursor: Annotated[
        Cursor | None,
        Query(
            description="Opaque: the next_cursor of the previous page, as it came (URL-safe "
            "base64 without padding); any other value answers 422."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    order: Literal["newest", "oldest"] = "newest",
) -> FastJSON:
    """Runs by date, newest first by default; pass ``next_cursor`` back as ``cursor``."""
    runs, next_cursor = service.list_runs(
        session, scope, filters, cursor=cursor, limit=limit, oldest_first=order == "oldest"
    )
    items = [service.summary_payload(r) for r in runs]
    return FastJSON({"items": items, "next_cursor": next_cursor})


@router.get("/{run_id}", response_model=RunOut)
def get_run(run_id: RunId, session: SessionDep, scope: ScopeDep) -> FastJSON:
    return FastJSON(service.run_payload(service.get_run(session, scope, run_id)))


@router.get("/{run_id}/lineage", response_model=Lineage)
def lineage(run_id: RunId, session: SessionDep, scope: ScopeDep) -> FastJSON:
    """The run's ancestors (parent first) and everything derived from it."""
    run = service.get_run(session, scope, run_id)
    ancestors = service.ancestor_ids(session, run["parent_id"])
    return FastJSON(
        {
            "run": service.summary_payload(run),
            "ancestors": service.summaries_by_ids(session, ancestors),
            "descendants": service.summaries_by_ids(
                session, service.descendant_ids(session, run["id"])
            ),
        }
    )
