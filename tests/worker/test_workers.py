"""Worker processes against the database queue: a worker killed with SIGKILL mid-job, several
workers on a burst of jobs (PostgreSQL), cancellation of a running job, and maximum attempts."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import Database
from app.models import JobStatus, Verification, utcnow
from app.worker import queue
from tests.conftest import make_client, overfit_epochs
from tests.worker.test_verification_api import RECIPE, report, wait


@contextmanager
def worker_process(
    url: str, log: Path, lease_s: float = 2.0, devices: str = "cpu"
) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "ADVISOR_DATABASE_URL": url, "ADVISOR_WORKER_LEASE_S": str(lease_s),
           "ADVISOR_WORKER_POLL_S": "0.1", "ADVISOR_LOG_LEVEL": "info",
           "ADVISOR_WORKER_THREADS": "1"}  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--devices", devices],
                                env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def job_row(url: str, job_id: int) -> Verification:
    db = Database(url)
    with db.session() as session:
        job = session.get(Verification, job_id)
        assert job is not None
        session.expunge(job)
    db.dispose()
    return job


def wait_for(predicate: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail("condition not reached in time")


SLOW = {**RECIPE, "epochs": 8, "data": {"kind": "digits", "image_size": 32}}


def test_a_killed_worker_loses_nothing(db_url: str, tmp_path: Path) -> None:
    with make_client(db_url) as client:
        run = report(client, SLOW)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "dropout_head", "seeds": 1}).json()["id"]  # fmt: skip
        with worker_process(db_url, tmp_path / "a.log") as first:
            wait_for(lambda: (job_row(db_url, job_id).progress or {}).get("epochs_done", 0) >= 2)
            first.send_signal(signal.SIGKILL)
            first.wait()
        killed = job_row(db_url, job_id)
        assert killed.status == JobStatus.RUNNING and killed.attempts == 1
        with worker_process(db_url, tmp_path / "b.log"):
            job = wait(client, job_id)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert len(job["result"]["child_runs"]) == 1, "exactly one result"
        runs = client.get("/api/v1/runs").json()["items"]
        assert len([r for r in runs if r["source"] == "verification"]) == 1


# The scale-out database only: PostgreSQL is where several workers share one queue.
@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_several_workers_share_a_burst_without_double_claims(db_url: str, tmp_path: Path) -> None:
    with make_client(db_url) as client:
        jobs = []
        for i in range(6):
            recipe = {**RECIPE, "epochs": 2, "lr": 1e-3 * (i + 1)}  # distinct: no reuse
            run = report(client, recipe)
            r = client.post(f"/api/v1/runs/{run['id']}/verifications",
                            json={"rung": "dropout_head", "seeds": 1})  # fmt: skip
            jobs.append(r.json()["id"])
        logs = [tmp_path / f"w{i}.log" for i in range(3)]
        with worker_process(db_url, logs[0], 20), worker_process(db_url, logs[1], 20), \
                worker_process(db_url, logs[2], 20):  # fmt: skip
            done = [wait(client, j, timeout=300) for j in jobs]
    assert all(j["status"] == "succeeded" and j["attempts"] == 1 for j in done), done
    lines = [line for log in logs for line in log.read_text().splitlines() if "claimed" in line]
    claims = [line.split("verification ")[1].split()[0] for line in lines]
    assert sorted(int(c) for c in claims) == sorted(jobs), "each job claimed exactly once"
    assert sum(bool(log.read_text().count("claimed")) for log in logs) >= 2, "work was shared"


def test_cancel_a_running_verification(db_url: str) -> None:
    with make_client(db_url, worker="embedded", worker_poll_s=0.1) as client:
        run = report(client, SLOW)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "dropout_head", "seeds": 3}).json()["id"]  # fmt: skip
        wait_for(
            lambda: client.get(f"/api/v1/verifications/{job_id}").json()["status"] == "running"
        )
        r = client.post(f"/api/v1/verifications/{job_id}/cancel")
        assert r.status_code == 200
        assert r.json()["cancel_requested"]
        job = wait(client, job_id)
        assert job["status"] == "cancelled"
        assert job["result"] is None
        assert job["progress"]["epochs_done"] < job["progress"]["epochs_total"]


def test_a_job_fails_after_its_maximum_attempts(db_url: str) -> None:
    # This machine has no GPU: every attempt of a cuda job fails, and the job is retried.
    with make_client(db_url, worker="embedded", worker_poll_s=0.05) as client:
        run = report(client)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "augment", "device": "cuda"}).json()["id"]  # fmt: skip
        job = wait(client, job_id)
    assert job["status"] == "failed"
    assert job["attempts"] == job["max_attempts"] == 3
    assert "CUDA is not available" in job["error"]


def test_an_expired_lease_with_no_attempts_left_fails_the_job(db_url: str) -> None:
    with make_client(db_url) as client:
        run = report(client)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "augment"}).json()["id"]  # fmt: skip
    db = Database(db_url)
    assert queue.claim(db, "w1", lease_s=60) == job_id
    assert queue.claim(db, "w2", lease_s=60) is None, "a leased job is not claimed twice"
    with db.session() as session:
        job = session.get(Verification, job_id)
        assert job is not None
        job.attempts = job.max_attempts
        job.lease_expires_at = utcnow() - timedelta(seconds=1)
    assert queue.claim(db, "w2", lease_s=60) is None
    with db.session() as session:
        job = session.get(Verification, job_id)
        assert job is not None
        assert job.status == JobStatus.FAILED
        assert "stopped answering" in (job.error or "")
    assert not queue.heartbeat(db, job_id, "w1", 60)[0], "the old owner has lost it"
    db.dispose()


def test_a_refuted_rung_is_skipped_in_the_lineage(client: TestClient, db_url: str) -> None:
    run = report(client, {**RECIPE, "augment": "none"})
    assert run["recommendation"]["rung"] == "more_data"
    job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                         json={"rung": "augment"}).json()["id"]  # fmt: skip
    db = Database(db_url)
    # Finished through the queue as a worker would: the result and its rung verdicts together.
    assert queue.claim(db, "w", 30) == job_id
    judged = {"rung": "augment", "verdict": "refuted", "effect": -0.02}
    assert queue.complete(
        db, job_id, "w", {"verdict": "refuted", "effect": -0.02, "rungs": [judged]}
    )
    assert not queue.complete(db, job_id, "w", {"rungs": [judged]})  # no longer held: nothing
    db.dispose()
    body = {"parent_id": run["id"], "applied_rung": "more_data",
            "recipe": {**RECIPE, "augment": "none"}, "epochs": overfit_epochs()}  # fmt: skip
    child = client.post("/api/v1/runs", json=body).json()
    skipped = {s["rung"]: s["reason"] for s in child["recommendation"]["skipped"]}
    assert "refuted" in skipped["augment"]
    assert child["recommendation"]["rung"] == "mixup"


def test_sigterm_hands_the_job_back_and_exits(db_url: str, tmp_path: Path) -> None:
    with make_client(db_url) as client:
        run = report(client, SLOW)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "dropout_head", "seeds": 2}).json()["id"]  # fmt: skip
        log = tmp_path / "w.log"
        with worker_process(db_url, log, lease_s=30) as proc:
            wait_for(lambda: (job_row(db_url, job_id).progress or {}).get("epochs_done", 0) >= 1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0
        job = job_row(db_url, job_id)
        assert job.status == JobStatus.QUEUED
        assert job.attempts == 0, "a handed-back attempt does not count"
        assert job.lease_owner is None
        assert "handed back" in log.read_text()
