"""An idle worker on PostgreSQL wakes when a job is queued (LISTEN/NOTIFY), long before its next
poll; on SQLite it polls."""

import threading
import time

import pytest

from app.db import Database
from app.worker import queue
from app.worker.worker import Worker
from tests.conftest import make_client
from tests.worker.test_verification_api import RECIPE, report


class Claimer(Worker):
    """The real wait loop; a claim is recorded and handed back cancelled instead of trained."""

    claimed_at: float | None = None

    def run_once(self) -> bool:
        job_id = queue.claim(self.db, self.name, 30)
        if job_id is None:
            return False
        self.claimed_at = time.monotonic()
        queue.cancelled(self.db, job_id, self.name)
        return True


@pytest.mark.parametrize("backend_url", ["postgresql", "sqlite"], indirect=True)
def test_a_queued_job_wakes_an_idle_worker_on_postgresql(db_url: str) -> None:
    db = Database(db_url)
    worker = Claimer(db, poll_s=20.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    with make_client(db_url) as client:
        run = report(client, RECIPE)
        thread.start()
        time.sleep(1.0)  # idle, listening (PostgreSQL) or sleeping until its next poll
        queued_at = time.monotonic()
        r = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"rung": "augment"})
        assert r.status_code == 202
        time.sleep(3.0)
    worker.stop.set()
    thread.join(timeout=30)
    db.dispose()
    if db_url.startswith("postgresql"):
        assert worker.claimed_at is not None and worker.claimed_at - queued_at < 2.0
    else:
        assert worker.claimed_at is None, "SQLite has no notifications: the next poll takes it"
