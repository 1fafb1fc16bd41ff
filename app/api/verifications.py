"""Verifications: ask for one (202, workers train its trials), follow it and its trials, cancel
it."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from app.advisor.ladder import RungId
from app.api.deps import ScopeDep, SessionDep, SettingsDep
from app.api.errors import API_ERRORS
from app.api.json import FastJSON, OrjsonRoute
from app.api.runs import RunId
from app.models import JobStatus
from app.schemas import ID_MAX, TrialOut, VerificationCreate, VerificationOut
from app.services import verifications as service
from app.services.runs import get_run
from app.services.trials import of_verification

router = APIRouter(tags=["verifications"], route_class=OrjsonRoute, responses=API_ERRORS)
JobId = Annotated[int, Path(ge=1, le=ID_MAX, description="A verification id (1 .. 2147483647).")]


@router.post(
    "/runs/{run_id}/verifications",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VerificationOut,
)
def request_verification(
    run_id: RunId,
    session: SessionDep,
    scope: ScopeDep,
    settings: SettingsDep,
    body: VerificationCreate | None = None,
) -> FastJSON:
    """Queue a retraining of the run's recipe against the recipe with the rung applied."""
    run = get_run(session, scope, run_id)
    job = service.request(session, run, body or VerificationCreate(), settings.data_roots)
    session.commit()
    return FastJSON(service.payload(job), status_code=202)


@router.get("/verifications/{job_id}", response_model=VerificationOut)
def get_verification(job_id: JobId, session: SessionDep, scope: ScopeDep) -> FastJSON:
    return FastJSON(service.payload(service.get(session, scope, job_id)))


@router.get("/verifications/{job_id}/trials", response_model=list[TrialOut])
def verification_trials(job_id: JobId, session: SessionDep, scope: ScopeDep) -> FastJSON:
    """The trainings the verification queued and those it reused, each with who trained it,
    where, when, and its curve so far (it grows while the trial runs)."""
    return FastJSON(of_verification(session, service.get(session, scope, job_id)))


@router.get("/verifications", response_model=list[VerificationOut])
def list_verifications(
    session: SessionDep,
    scope: ScopeDep,
    run_id: Annotated[int | None, Query(ge=1, le=ID_MAX)] = None,
    status: JobStatus | None = None,
    rung: RungId | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FastJSON:
    jobs = service.listing(session, scope, run_id=run_id, status=status, rung=rung, limit=limit)
    return FastJSON([service.payload(j) for j in jobs])


@router.post("/verifications/{job_id}/cancel", response_model=VerificationOut)
def cancel_verification(job_id: JobId, session: SessionDep, scope: ScopeDep) -> FastJSON:
    job = service.cancel(session, scope, job_id)
    session.commit()
    return FastJSON(service.payload(job))
