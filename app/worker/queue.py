"""The job queue is the ``verifications`` table.

A worker claims the oldest runnable job in one atomic statement — ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, a single conditional UPDATE on SQLite (which has one writer) — and holds it under a
lease that its heartbeat renews. A job whose lease ran out (worker killed, machine lost) is
runnable again, until it has used its attempts; then it fails with the reason.
"""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from app.db import Database
from app.models import Run, RungVerdict, Verification, utcnow

V = Verification


def _runnable(now: datetime) -> Any:
    return and_(
        V.attempts < V.max_attempts,
        V.cancel_requested.is_(False),
        or_(V.status == "queued", and_(V.status == "running", V.lease_expires_at < now)),
    )


def expire_exhausted(session: Session, now: datetime) -> None:
    """Jobs whose last lease expired with no attempts left fail, saying why."""
    session.execute(
        update(V)
        .where(V.status == "running", V.lease_expires_at < now, V.attempts >= V.max_attempts)
        .values(
            status="failed",
            finished_at=now,
            lease_owner=None,
            error="the worker running it stopped answering, on every attempt",
        )
    )


def claim(db: Database, worker: str, lease_s: float) -> int | None:
    """Take the oldest runnable job for ``worker``; None when there is none."""
    now = utcnow()
    claimed = {
        "status": "running",
        "lease_owner": worker,
        "lease_expires_at": now + timedelta(seconds=lease_s),
        "heartbeat_at": now,
        "started_at": now,
        "attempts": V.attempts + 1,
    }
    with db.session() as session:
        expire_exhausted(session, now)
        oldest = select(V.id).where(_runnable(now)).order_by(V.created_at, V.id).limit(1)
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            job_id = session.scalar(oldest.with_for_update(skip_locked=True))
            if job_id is None:
                return None
            session.execute(update(V).where(V.id == job_id).values(**claimed))
            return job_id
        # SQLite: one statement, and the condition is checked again by the writer that wins.
        return session.scalar(
            update(V)
            .where(V.id == oldest.scalar_subquery(), _runnable(now))
            .values(**claimed)
            .returning(V.id)
        )


def heartbeat(
    db: Database, job_id: int, worker: str, lease_s: float, progress: dict[str, Any] | None = None
) -> tuple[bool, bool]:
    """Renew the lease (and store progress). Returns (still ours, cancellation asked)."""
    now = utcnow()
    values: dict[str, Any] = {
        "lease_expires_at": now + timedelta(seconds=lease_s),
        "heartbeat_at": now,
    }
    if progress is not None:
        values["progress"] = progress
    row = _update_held(db, job_id, worker, values)
    return (row is not None, bool(row and row.cancel_requested))


def _update_held(db: Database, job_id: int, worker: str, values: dict[str, Any]) -> Any:
    """Update the job only while ``worker`` still holds it; the row, or None when it does not."""
    with db.session() as session:
        return session.execute(
            update(V)
            .where(V.id == job_id, V.lease_owner == worker, V.status == "running")
            .values(**values)
            .returning(V.id, V.cancel_requested)
        ).first()


def _finish(db: Database, job_id: int, worker: str, **values: Any) -> bool:
    values = {"finished_at": utcnow(), "lease_owner": None, "lease_expires_at": None, **values}
    return _update_held(db, job_id, worker, values) is not None


def complete(db: Database, job_id: int, worker: str, result: dict[str, Any]) -> bool:
    """Store the result and its rung verdicts in one transaction, only while ``worker`` still
    holds the job; False when it no longer did (its lease ran out)."""
    values = {
        "finished_at": utcnow(),
        "lease_owner": None,
        "lease_expires_at": None,
        "status": "succeeded",
        "result": result,
        "verdict": result.get("verdict"),
        "effect": result.get("effect"),
        "error": None,
    }
    with db.session() as session:
        held = session.execute(
            update(V)
            .where(V.id == job_id, V.lease_owner == worker, V.status == "running")
            .values(**values)
            .returning(V.run_id)
        ).first()
        if held is None:
            return False
        project_id = session.scalar(select(Run.project_id).where(Run.id == held.run_id))
        session.add_all(
            RungVerdict(
                verification_id=job_id,
                run_id=held.run_id,
                project_id=project_id,
                rung=judged["rung"],
                verdict=judged["verdict"],
                effect=judged.get("effect"),
            )
            for judged in result.get("rungs", [])
            if judged.get("verdict")
        )
    return True


def fail(db: Database, job_id: int, worker: str, error: str, *, final: bool) -> bool:
    """A failed attempt: queued again while attempts remain, unless ``final``."""
    with db.session() as session:
        job = session.get(V, job_id)
        retry = job is not None and not final and job.attempts < job.max_attempts
    if retry:
        return _finish(db, job_id, worker, status="queued", error=error, finished_at=None)
    return _finish(db, job_id, worker, status="failed", error=error)


def cancelled(db: Database, job_id: int, worker: str) -> bool:
    return _finish(db, job_id, worker, status="cancelled")


def release(db: Database, job_id: int, worker: str) -> bool:
    """Hand the job back untouched (the worker is shutting down): the attempt does not count."""
    return _finish(db, job_id, worker, status="queued", attempts=V.attempts - 1, finished_at=None)


def device_of(db: Database, job_id: int) -> str:
    with db.session() as session:
        return session.scalar(select(V.device).where(V.id == job_id)) or "auto"
