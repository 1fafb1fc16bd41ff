"""The worker API: workers claim trials (a long poll), heartbeat them with the epochs trained so
far, and hand in what came of them. Behind a worker token: the fleet's, or a project's. The
model builder's workers (``advisor worker``) and the agents running users' scripts
(``overfit-advisor agent``) speak it alike, each claiming its own trials."""

import time
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from app.api.deps import SessionDep, SettingsDep, WorkerScopeDep
from app.api.errors import API_ERRORS
from app.api.json import FastJSON, OrjsonRoute
from app.schemas import (
    ID_MAX,
    BeatOut,
    ClaimedOut,
    TrialBeat,
    TrialClaim,
    TrialDone,
    TrialFailure,
    TrialRelease,
)
from app.services import trials as service

router = APIRouter(
    prefix="/trials", tags=["workers"], route_class=OrjsonRoute, responses=API_ERRORS
)
TrialId = Annotated[int, Path(ge=1, le=ID_MAX, description="A trial id (1 .. 2147483647).")]
# Between two looks at the queue while a long poll waits: work queued by another process (which
# this one is not woken for) starts at most this late.
RECHECK_S = 0.25


@router.post(
    "/claim",
    response_model=ClaimedOut,
    responses={204: {"description": "No trial came within wait_s."}},
)
def claim(
    body: TrialClaim, session: SessionDep, scope: WorkerScopeDep, settings: SettingsDep
) -> Response:
    """The oldest queued trial whose devices fit, leased to the worker; waits up to
    ``wait_s`` for one."""
    deadline = time.monotonic() + body.wait_s
    service.advance_stalled(session)
    session.commit()
    while True:
        found = service.claim(
            session,
            body.worker,
            devices=body.devices,
            lease_s=settings.worker_lease_s,
            scope=scope,
            runner=body.runner,
            project=body.project,
        )
        session.commit()
        if found is not None:
            return FastJSON(ClaimedOut.model_validate(found, from_attributes=True).model_dump())
        left = deadline - time.monotonic()
        if left <= 0:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        service.wait_for_work(min(left, RECHECK_S))


@router.post("/{trial_id}/heartbeat", response_model=BeatOut)
def heartbeat(
    trial_id: TrialId,
    body: TrialBeat,
    session: SessionDep,
    scope: WorkerScopeDep,
    settings: SettingsDep,
) -> FastJSON:
    """Renew the lease (409 once it is lost: stop, and hand in nothing), with the epochs so far."""
    curve = None if body.curve is None else [e.model_dump(exclude_none=True) for e in body.curve]
    stop = service.heartbeat(
        session, trial_id, body.worker, lease_s=settings.worker_lease_s, curve=curve, scope=scope
    )
    session.commit()
    return FastJSON({"stop": stop})


@router.post("/{trial_id}/complete", status_code=status.HTTP_204_NO_CONTENT)
def complete(
    trial_id: TrialId, body: TrialDone, session: SessionDep, scope: WorkerScopeDep
) -> Response:
    """Hand in the trained curve (all of it, or up to where the worker was told to stop); the
    service computes the figures from it. 409, and nothing stored, once the lease is lost."""
    service.complete(
        session,
        trial_id,
        body.worker,
        curve=[e.model_dump(exclude_none=True) for e in body.curve],
        n_train=body.n_train,
        n_classes=body.n_classes,
        duration_s=body.duration_s,
        device=body.device,
        n_skipped=body.n_skipped,
        skipped=body.skipped,
        scope=scope,
    )
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{trial_id}/fail", status_code=status.HTTP_204_NO_CONTENT)
def fail(
    trial_id: TrialId, body: TrialFailure, session: SessionDep, scope: WorkerScopeDep
) -> Response:
    """The training failed: queued again within its attempts, unless ``final``."""
    service.fail(session, trial_id, body.worker, error=body.error, final=body.final, scope=scope)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{trial_id}/release", status_code=status.HTTP_204_NO_CONTENT)
def release(
    trial_id: TrialId, body: TrialRelease, session: SessionDep, scope: WorkerScopeDep
) -> Response:
    """Hand the trial back untrained (the worker is stopping): the attempt does not count."""
    service.release(session, trial_id, body.worker, scope=scope)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
