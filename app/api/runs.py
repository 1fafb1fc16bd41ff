"""/api/v1/runs: report runs, append epochs, browse history and lineage."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from app.advisor.diagnosis import Verdict
from app.advisor.ladder import RungId
from app.api.deps import ScopeDep, SessionDep, SettingsDep
from app.schemas import EpochsIn, ErrorOut, Lineage, RunCreate, RunOut, RunPage
from app.services import runs as service
from app.services.errors import Forbidden
from app.services.projects import project_by_name

router = APIRouter(prefix="/runs", tags=["runs"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    403: {"model": ErrorOut},
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunOut, responses=ERRORS)
def create_run(
    body: RunCreate, session: SessionDep, scope: ScopeDep, settings: SettingsDep
) -> RunOut:
    """Store a training-run report; the answer carries its diagnosis and the next remedy."""
    name = body.project or scope.project_name
    if not scope.sees_all and name != scope.project_name:
        raise Forbidden(f"this token is for project '{scope.project_name}'", field="project")
    project = project_by_name(session, name)
    run = service.create_run(session, project, body, max_epochs=settings.max_epochs)
    session.commit()
    return service.run_out(session, run)


@router.post("/{run_id}/epochs", response_model=RunOut, responses=ERRORS)
def append_epochs(
    run_id: int, body: EpochsIn, session: SessionDep, scope: ScopeDep, settings: SettingsDep
) -> RunOut:
    """Append epochs to a run in progress; the diagnosis and recommendation are recomputed."""
    run = service.get_run(session, scope, run_id)
    service.append_epochs(session, run, body.epochs, max_epochs=settings.max_epochs)
    session.commit()
    return service.run_out(session, run)


@router.get("", response_model=RunPage, responses=ERRORS)
def list_runs(
    session: SessionDep,
    scope: ScopeDep,
    project: str | None = None,
    verdict: Verdict | None = None,
    rung: RungId | None = None,
    name: Annotated[str | None, Query(max_length=200, description="substring, any case")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunPage:
    runs, next_cursor = service.list_runs(
        session,
        scope,
        project=project,
        verdict=verdict,
        rung=rung,
        name=name,
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
        limit=limit,
    )
    return RunPage(items=service.summaries(session, runs), next_cursor=next_cursor)


@router.get("/{run_id}", response_model=RunOut, responses=ERRORS)
def get_run(run_id: int, session: SessionDep, scope: ScopeDep) -> RunOut:
    return service.run_out(session, service.get_run(session, scope, run_id))


@router.get("/{run_id}/lineage", response_model=Lineage, responses=ERRORS)
def lineage(run_id: int, session: SessionDep, scope: ScopeDep) -> Lineage:
    """The run's ancestors (parent first) and everything derived from it."""
    run = service.get_run(session, scope, run_id)
    ancestors = service.runs_by_ids(session, service.ancestor_ids(session, run.parent_id))
    descendants = service.runs_by_ids(session, service.descendant_ids(session, run.id))
    return Lineage(
        run=service.summaries(session, [run])[0],
        ancestors=service.summaries(session, ancestors),
        descendants=service.summaries(session, descendants),
    )
