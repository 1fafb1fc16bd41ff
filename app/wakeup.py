"""The wake-up channel between those who queue jobs and idle workers.

On PostgreSQL, :func:`announce` sends a NOTIFY on ``CHANNEL`` that the database delivers at the
commit of the transaction that queued the job, and a worker waiting in :class:`Wakeup` (LISTEN)
wakes at once. Polling stays as the fallback (a lost connection, a missed notification) and is
the only way on SQLite. Services announce here without importing the worker; the worker listens
here without knowing who queues.
"""

import logging
import threading

import psycopg
from sqlalchemy import event, make_url, text
from sqlalchemy.orm import Session

from app.db import Database

CHANNEL = "advisor_jobs"
log = logging.getLogger("advisor.worker")


# Waiters in this process (the worker API's long polls) are woken at the commit too, on either
# backend; those of other processes hear NOTIFY or poll.
_queued = threading.Condition()


def announce(session: Session) -> None:
    """Tell idle workers, once ``session`` commits, that work was queued."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))
    if not session.info.get("announced"):
        session.info["announced"] = True
        event.listen(session, "after_commit", _wake, once=True)


def _wake(session: Session) -> None:
    session.info.pop("announced", None)
    with _queued:
        _queued.notify_all()


def wait_for_work(timeout: float) -> None:
    """Return when work is announced in this process, or after ``timeout``."""
    with _queued:
        _queued.wait(timeout)


class Wakeup:
    """``wait(timeout)``: returns when a job is announced, ``stop`` is set, or ``timeout``
    passed."""

    def __init__(self, db: Database, stop: threading.Event, *, listen: bool = True) -> None:
        url = make_url(db.url)
        self.conninfo = (
            url.set(drivername="postgresql").render_as_string(hide_password=False)
            if listen and url.get_backend_name() == "postgresql"
            else None
        )
        self.stop = stop
        self.conn: psycopg.Connection[tuple[object, ...]] | None = None

    def wait(self, timeout: float) -> None:
        if self.conninfo is None or self.stop.is_set():
            self.stop.wait(timeout)
            return
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.conninfo, autocommit=True)
                self.conn.execute(f"LISTEN {CHANNEL}")
            for _ in self.conn.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error:
            log.warning("listening for queued jobs failed; polling instead", exc_info=True)
            self.close()
            self.stop.wait(timeout)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
