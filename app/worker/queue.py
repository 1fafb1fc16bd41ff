"""The job queue is the ``verifications`` table.

A worker claims the oldest runnable job in one atomic statement — ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, a single conditional UPDATE on SQLite (which has one writer) — and holds it under a
lease that its heartbeat renews. A job whose lease ran out (worker killed, machine lost) is
runnable again, until it has used its attempts; then it fails with the reason. Lease times come
from the database's clock, never a worker's; everything a finished job leaves (result, verdicts,
child runs) is written in one transaction that only the lease holder's update lets through.
"""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.db import Database
from app.models import JobStatus, Project, Run, RungVerdict, UTCDateTime, Verification
from app.schemas import RunCreate
from app.services.runs import create_run

V = Verification


def clock(session: Session, seconds: float = 0.0) -> Any:
    """The database's time ``seconds`` from now, as SQL: leases never depend on the clock of
    the machine a worker runs on, so workers whose clocks differ agree on who holds a job."""
    if session.get_bind().dialect.name == "postgresql":
        return func.now() + timedelta(seconds=seconds)
    # SQLite: UTC to the millisecond, in the text form the column type reads back.
    shift = f"{seconds:+.3f} seconds"
    return func.strftime("%Y-%m-%d %H:%M:%f000", "now", shift, type_=UTCDateTime())


def _runnable(now: Any) -> Any:
    return and_(
        V.attempts < V.max_attempts,
        V.cancel_requested.is_(False),
        or_(
            V.status == JobStatus.QUEUED,
            and_(V.status == JobStatus.RUNNING, V.lease_expires_at < now),
        ),
    )


def expire_exhausted(session: Session) -> None:
    """Jobs whose last lease expired with no attempts left fail, saying why."""
    now = clock(session)
    session.execute(
        update(V)
        .where(
            V.status == JobStatus.RUNNING, V.lease_expires_at < now, V.attempts >= V.max_attempts
        )
        .values(
            status=JobStatus.FAILED,
            finished_at=now,
            lease_owner=None,
            error="the worker running it stopped answering, on every attempt",
        )
    )


def claim(db: Database, worker: str, lease_s: float, devices: int = 1) -> int | None:
    """Take the oldest runnable job for ``worker``, which offers ``devices`` devices (a job
    that wants more waits for a worker that has them); None when there is none."""
    with db.session() as session:
        now = clock(session)
        claimed = {
            "status": JobStatus.RUNNING,
            "lease_owner": worker,
            "lease_expires_at": clock(session, lease_s),
            "heartbeat_at": now,
            "started_at": now,
            "attempts": V.attempts + 1,
        }
        expire_exhausted(session)
        fits = and_(_runnable(now), V.gpus <= devices)
        oldest = select(V.id).where(fits).order_by(V.created_at, V.id).limit(1)
        if session.get_bind().dialect.name == "postgresql":
            job_id = session.scalar(oldest.with_for_update(skip_locked=True))
            if job_id is None:
                return None
            session.execute(update(V).where(V.id == job_id).values(**claimed))
            return job_id
        # SQLite: one statement, and the condition is checked again by the writer that wins.
        return session.scalar(
            update(V)
            .where(V.id == oldest.scalar_subquery(), fits)
            .values(**claimed)
            .returning(V.id)
        )


def heartbeat(
    db: Database, job_id: int, worker: str, lease_s: float, progress: dict[str, Any] | None = None
) -> tuple[bool, bool]:
    """Renew the lease (and store progress). Returns (still ours, cancellation asked)."""
    with db.session() as session:
        values: dict[str, Any] = {
            "lease_expires_at": clock(session, lease_s),
            "heartbeat_at": clock(session),
        }
        if progress is not None:
            values["progress"] = progress
        row = _held(session, job_id, worker, values)
        return (row is not None, bool(row and row.cancel_requested))


def _held(session: Session, job_id: int, worker: str, values: dict[str, Any]) -> Any:
    """Update the job only while ``worker`` still holds it; the row, or None when it does not."""
    return session.execute(
        update(V)
        .where(V.id == job_id, V.lease_owner == worker, V.status == JobStatus.RUNNING)
        .values(**values)
        .returning(V.id, V.run_id, V.cancel_requested)
    ).first()


def _ended(session: Session) -> dict[str, Any]:
    """What every way out of ``running`` sets: the end time, and no lease."""
    return {"finished_at": clock(session), "lease_owner": None, "lease_expires_at": None}


def _finish(db: Database, job_id: int, worker: str, **values: Any) -> bool:
    with db.session() as session:
        return _held(session, job_id, worker, {**_ended(session), **values}) is not None


def complete(
    db: Database,
    job_id: int,
    worker: str,
    result: dict[str, Any],
    children: Sequence[tuple[str, RunCreate]] = (),
) -> bool:
    """Store the result, its rung verdicts and the candidates' child runs in one transaction,
    only while ``worker`` still holds the job: a job's effects happen once, whatever the
    timing. False (and nothing written) when it no longer did."""
    with db.session() as session:
        values = {
            **_ended(session),
            "status": JobStatus.SUCCEEDED,
            "verdict": result.get("verdict"),
            "effect": result.get("effect"),
            "error": None,
        }
        held = _held(session, job_id, worker, values)
        if held is None:
            return False
        project = session.execute(
            select(Project.id, Project.name)
            .join(Run, Run.project_id == Project.id)
            .where(Run.id == held.run_id)
        ).one()
        made: dict[str, list[int]] = {}
        for rung, body in children:
            child = create_run(
                session, (project.id, project.name), body, max_epochs=100_000,
                source="verification",
            )  # fmt: skip
            made.setdefault(rung, []).append(child["id"])
        stored = {**result, "rungs": [dict(r) for r in result.get("rungs", [])]}
        for entry in stored["rungs"]:
            entry["child_runs"] = made.get(entry["rung"], [])
        stored["child_runs"] = [i for entry in stored["rungs"] for i in entry["child_runs"]]
        session.execute(update(V).where(V.id == job_id).values(result=stored))
        session.add_all(
            RungVerdict(
                verification_id=job_id,
                run_id=held.run_id,
                project_id=project.id,
                rung=judged["rung"],
                verdict=judged["verdict"],
                effect=judged.get("effect"),
            )
            for judged in stored["rungs"]
            if judged.get("verdict")
        )
    return True


def fail(db: Database, job_id: int, worker: str, error: str, *, final: bool) -> bool:
    """A failed attempt: queued again while attempts remain, unless ``final``."""
    with db.session() as session:
        job = session.get(V, job_id)
        retry = job is not None and not final and job.attempts < job.max_attempts
    if retry:
        return _finish(db, job_id, worker, status=JobStatus.QUEUED, error=error, finished_at=None)
    return _finish(db, job_id, worker, status=JobStatus.FAILED, error=error)


def cancelled(db: Database, job_id: int, worker: str) -> bool:
    return _finish(db, job_id, worker, status=JobStatus.CANCELLED)


def release(db: Database, job_id: int, worker: str) -> bool:
    """Hand the job back untouched (the worker is shutting down): the attempt does not count."""
    return _finish(
        db, job_id, worker, status=JobStatus.QUEUED, attempts=V.attempts - 1, finished_at=None
    )


def placement_of(db: Database, job_id: int) -> tuple[str, int]:
    """The device the job asks for, and over how many devices one retrain spreads."""
    with db.session() as session:
        device, gpus = session.execute(select(V.device, V.gpus).where(V.id == job_id)).one()
        return device, gpus
