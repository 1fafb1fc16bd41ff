"""How an idle worker waits for the next job. On PostgreSQL, queuing a job sends a NOTIFY on
``CHANNEL`` (services.verifications) and a LISTENing worker wakes at once; polling stays as the
fallback (a lost connection, a missed notification) and is the only way on SQLite."""

import logging
import threading

import psycopg
from sqlalchemy import make_url

from app.db import Database

CHANNEL = "advisor_jobs"
log = logging.getLogger("advisor.worker")


class Wakeup:
    """``wait(timeout)``: returns when a job is queued, ``stop`` is set, or ``timeout`` passed."""

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
