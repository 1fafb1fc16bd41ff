"""Worker processes against the trial queue: a worker killed with SIGKILL mid-trial, several
workers on a burst of verifications (PostgreSQL), cancellation of a running verification, a
trial's maximum attempts, an expired lease, and SIGTERM handing the trial back."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.db import Database
from app.models import JobStatus, Run, RungVerdict, Trial, TrialStatus, Verification
from app.services import trials
from app.services.trials import LeaseLost
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


@contextmanager
def workers(url: str, logs: list[Path], lease_s: float = 20.0) -> Iterator[None]:
    """One worker process per log, started together; once all are ready (torch loaded, idle),
    they take queued trials within a poll of their queuing, all at once."""
    with ExitStack() as stack:
        for log in logs:
            stack.enter_context(worker_process(url, log, lease_s))
        wait_for(lambda: all(log.exists() and " ready " in log.read_text() for log in logs))
        yield


def job_row(url: str, job_id: int) -> Verification:
    db = Database(url)
    with db.session() as session:
        job = session.get(Verification, job_id)
        assert job is not None
        session.expunge(job)
    db.dispose()
    return job


def trial_rows(url: str, job_id: int | None = None) -> list[Trial]:
    """The trials of a verification (every trial when None), in the order they were queued."""
    db = Database(url)
    with db.session() as session:
        query = select(Trial).order_by(Trial.id)
        if job_id is not None:
            query = query.where(Trial.verification_id == job_id)
        found = list(session.scalars(query))
        session.expunge_all()
    db.dispose()
    return found


def claimed(log: Path) -> list[int]:
    """The trials a worker claimed, from its log's "trial N claimed" lines, in order."""
    return [int(n) for n in re.findall(r"trial (\d+) claimed", log.read_text())]


def epochs_done(url: str, job_id: int) -> int:
    return int((job_row(url, job_id).progress or {}).get("epochs_done", 0))


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
            wait_for(lambda: epochs_done(db_url, job_id) >= 2)
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert job_row(db_url, job_id).status == JobStatus.RUNNING
        [held] = [t for t in trial_rows(db_url, job_id) if t.status == TrialStatus.RUNNING]
        assert held.attempts == 1 and held.lease_owner is not None
        with worker_process(db_url, tmp_path / "b.log"):
            job = wait(client, job_id)
        assert job["status"] == "succeeded", job
        # Its lease ran out, and the second worker took the trial over and trained it again.
        assert held.id in claimed(tmp_path / "b.log")
        done = {t.id: t for t in trial_rows(db_url, job_id)}
        assert len(done) == 2 and all(t.status == TrialStatus.DONE for t in done.values())
        assert done[held.id].attempts == 2
        assert done[held.id].worker not in (None, held.lease_owner)
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
        with workers(db_url, logs):
            done = [wait(client, j, timeout=300) for j in jobs]
    assert all(j["status"] == "succeeded" for j in done), done
    queued = [t for job_id in jobs for t in trial_rows(db_url, job_id)]
    assert len(queued) == 2 * len(jobs), "a baseline and a candidate each"
    assert all(t.status == TrialStatus.DONE and t.attempts == 1 for t in queued)
    claims = [trial for log in logs for trial in claimed(log)]
    assert sorted(claims) == sorted(t.id for t in queued), "each trial claimed exactly once"
    assert sum(bool(claimed(log)) for log in logs) >= 2, "work was shared"


def test_cancel_a_running_verification(db_url: str) -> None:
    with make_client(db_url, worker="embedded", worker_poll_s=0.1) as client:
        run = report(client, SLOW)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "dropout_head", "seeds": 3}).json()["id"]  # fmt: skip
        wait_for(lambda: epochs_done(db_url, job_id) >= 1)
        r = client.post(f"/api/v1/verifications/{job_id}/cancel")
        assert r.status_code == 200
        # Ended at once; the trial in training stops at its worker's next heartbeat.
        assert r.json()["cancel_requested"] and r.json()["status"] == "cancelled"
        wait_for(lambda: all(t.status != TrialStatus.RUNNING for t in trial_rows(db_url, job_id)))
        job = wait(client, job_id)
        assert job["status"] == "cancelled"
        assert job["result"] is None
        assert job["progress"]["epochs_done"] < job["progress"]["epochs_total"]
        left = trial_rows(db_url, job_id)
        assert {t.status for t in left} == {TrialStatus.CANCELLED}, "nothing left to train"
        assert all(t.lease_owner is None for t in left)
        runs = client.get("/api/v1/runs").json()["items"]
        assert all(r["source"] != "verification" for r in runs), "no child run"
    db = Database(db_url)
    with db.session() as session:
        assert session.scalars(select(RungVerdict)).all() == []
    db.dispose()


def test_a_trial_fails_after_its_maximum_attempts_and_fails_the_verification(
    db_url: str,
) -> None:
    # This machine has no GPU: every attempt of a cuda trial fails, and the trial is retried.
    with make_client(db_url, worker="embedded", worker_poll_s=0.05) as client:
        run = report(client)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "augment", "device": "cuda"}).json()["id"]  # fmt: skip
        job = wait(client, job_id)
    assert job["status"] == "failed"
    [failed] = [t for t in trial_rows(db_url, job_id) if t.status == TrialStatus.FAILED]
    assert failed.attempts == failed.max_attempts == 3
    assert "CUDA is not available" in (failed.error or "")
    # The verification's error names the trial.
    assert f"trial {failed.id} ({failed.role}, seed {failed.seed}) failed" in job["error"]
    assert "CUDA is not available" in job["error"]
    others = [t for t in trial_rows(db_url, job_id) if t.id != failed.id]
    assert others and {t.status for t in others} == {TrialStatus.CANCELLED}


def test_an_expired_lease_with_no_attempts_left_fails_the_trial_and_its_verification(
    db_url: str,
) -> None:
    with make_client(db_url) as client:
        run = report(client)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "augment"}).json()["id"]  # fmt: skip
    db = Database(db_url)
    with db.session() as session:
        first = trials.claim(session, "w1", devices=1, lease_s=60)
    assert first is not None and first.verification_id == job_id
    # w2 takes every other queued trial, never the one w1 holds.
    taken = []
    while True:
        with db.session() as session:
            other = trials.claim(session, "w2", devices=1, lease_s=60)
        if other is None:
            break
        taken.append(other.id)
    assert taken and first.id not in taken, "a leased trial is not claimed twice"
    assert len(set(taken)) == len(taken)
    with db.session() as session:
        # The last attempt's lease ran out a second ago, by the database's clock.
        session.execute(
            update(Trial)
            .where(Trial.id == first.id)
            .values(attempts=Trial.max_attempts, lease_expires_at=trials.clock(session, -1.0))
        )
    with db.session() as session:
        assert trials.claim(session, "w3", devices=1, lease_s=60) is None
    with db.session() as session:
        lost = session.get(Trial, first.id)
        job = session.get(Verification, job_id)
        assert lost is not None and job is not None
        assert lost.status == TrialStatus.FAILED and lost.lease_owner is None
        assert "stopped answering" in (lost.error or "")
        assert job.status == JobStatus.FAILED
        assert f"trial {first.id}" in (job.error or "") and "stopped answering" in (job.error or "")
    with pytest.raises(LeaseLost), db.session() as session:
        trials.heartbeat(session, first.id, "w1", lease_s=60)  # the old owner has lost it
    # The others' trials are told to stop at their next heartbeat.
    with db.session() as session:
        assert trials.heartbeat(session, taken[0], "w2", lease_s=60)
    db.dispose()


def made_up_curve(seed: int, role: str, epochs: int) -> list[dict[str, Any]]:
    """A training's epochs as a worker reports them; the candidate clearly worse, seed after
    seed, so the verdict is refuted."""
    drop = 0.05 if role == "candidate" else 0.0
    return [
        {"epoch": i, "train_loss": 1.0 / (i + 1), "valid_loss": 0.5 + 0.01 * i,
         "metrics": {"accuracy": 0.6 + 0.1 * i - drop + 0.002 * seed * (role == "candidate")}}
        for i in range(epochs)
    ]  # fmt: skip


def test_a_refuted_rung_is_skipped_in_the_lineage(client: TestClient, db_url: str) -> None:
    run = report(client, {**RECIPE, "augment": "none"})
    assert run["recommendation"]["rung"] == "more_data"
    queued = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"rung": "augment"}).json()
    job_id, epochs = queued["id"], queued["epochs"]
    db = Database(db_url)
    # Trained as a worker would: each trial claimed and handed in (the curves made up); the
    # protocol asks for pairs until the verdict settles, and the last hand-in writes the result
    # and its rung verdicts together.
    handed: list[trials.Claimed] = []
    while True:
        with db.session() as session:
            trial = trials.claim(session, "w", devices=1, lease_s=30)
            if trial is None:
                break
            curve = made_up_curve(trial.seed, trial.role, epochs)
            trials.complete(session, trial.id, "w", curve=curve, n_train=1438, n_classes=10,
                            duration_s=1.0, device="cpu")  # fmt: skip
            handed.append(trial)
    with pytest.raises(LeaseLost), db.session() as session:  # no longer held: nothing stored
        trials.complete(session, handed[-1].id, "w", curve=made_up_curve(0, "baseline", epochs),
                        n_train=1438, n_classes=10, duration_s=1.0, device="cpu")  # fmt: skip
    with db.session() as session:
        verdicts = session.scalars(select(RungVerdict)).all()
        assert [(v.rung, v.verdict, v.run_id) for v in verdicts] == [
            ("augment", "refuted", run["id"])
        ]
        children = session.scalars(select(Run.id).where(Run.parent_id == run["id"])).all()
    db.dispose()
    job = client.get(f"/api/v1/verifications/{job_id}").json()
    assert job["status"] == "succeeded" and job["verdict"] == "refuted", job
    assert len(children) == len(handed) // 2 == job["result"]["seeds_used"]
    body = {"parent_id": run["id"], "applied_rung": "more_data",
            "recipe": {**RECIPE, "augment": "none"}, "epochs": overfit_epochs()}  # fmt: skip
    child = client.post("/api/v1/runs", json=body).json()
    skipped = {s["rung"]: s["reason"] for s in child["recommendation"]["skipped"]}
    assert "refuted" in skipped["augment"]
    assert child["recommendation"]["rung"] == "mixup"


def test_sigterm_hands_the_trial_back_and_exits(db_url: str, tmp_path: Path) -> None:
    with make_client(db_url) as client:
        run = report(client, SLOW)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "dropout_head", "seeds": 2}).json()["id"]  # fmt: skip
        log = tmp_path / "w.log"
        with worker_process(db_url, log, lease_s=30) as proc:
            wait_for(lambda: epochs_done(db_url, job_id) >= 1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0
        said = log.read_text()
        last = claimed(log)[-1]
        [trial] = [t for t in trial_rows(db_url, job_id) if t.id == last]
        assert trial.status == TrialStatus.QUEUED
        assert trial.attempts == 0, "a handed-back attempt does not count"
        assert trial.lease_owner is None and trial.curve == []
        assert f"trial {last} handed back" in said, said[-2000:]
        assert all(t.status != TrialStatus.RUNNING for t in trial_rows(db_url, job_id))
        assert not job_row(db_url, job_id).status.finished
