"""An idle worker on PostgreSQL wakes when a verification queues its trials (LISTEN/NOTIFY), long
before its next poll; on SQLite it polls."""

import threading
import time

import pytest

from app.db import Database
from app.worker.local import LocalSource
from app.worker.worker import Worker
from tests.conftest import make_client
from tests.worker.test_verification_api import RECIPE, report


class Claimer(Worker):
    """The real wait loop (the database source's claim, which waits on NOTIFY or polls); the
    first claim is recorded and its trial handed back instead of trained."""

    claimed_at: float | None = None

    def run_once(self) -> bool:
        trial = self.source.claim(self.name, len(self.devices), self.poll_s)
        if trial is None:
            return False
        self.claimed_at = time.monotonic()
        self.source.release(trial, self.name)
        self.stop.set()
        return True


@pytest.mark.parametrize("backend_url", ["postgresql", "sqlite"], indirect=True)
def test_a_queued_trial_wakes_an_idle_worker_on_postgresql(db_url: str) -> None:
    db = Database(db_url)
    source = LocalSource(db, lease_s=30)
    worker = Claimer(source, poll_s=20.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    with make_client(db_url) as client:
        run = report(client, RECIPE)
        thread.start()
        time.sleep(1.0)  # idle, listening (PostgreSQL) or sleeping until its next poll
        queued_at = time.monotonic()
        r = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"rung": "augment"})
        assert r.status_code == 202
        time.sleep(3.0)
        claimed_at = worker.claimed_at
    worker.stop.set()
    source.idle.set()  # cut the SQLite worker's poll short: the test is over
    thread.join(timeout=30)
    assert not thread.is_alive()
    db.dispose()
    if db_url.startswith("postgresql"):
        assert claimed_at is not None and claimed_at - queued_at < 2.0
    else:
        assert claimed_at is None, "SQLite has no notifications: the next poll takes it"
