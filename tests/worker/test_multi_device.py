"""Verifications that spread each retrain over several devices (gloo processes on the CPU here):
only a worker offering as many takes their trials, and a training process that dies fails the
trial's attempt cleanly — the trial is retried and nothing of the failed attempt is stored."""

import os
import signal
from pathlib import Path

from sqlalchemy import select

from app.db import Database
from app.models import JobStatus, Run, Trial, TrialStatus
from app.worker.local import LocalSource
from app.worker.worker import Worker
from tests.conftest import make_client
from tests.training.test_distributed import training_processes
from tests.worker.test_verification_api import RECIPE, report, wait
from tests.worker.test_workers import claimed, job_row, trial_rows, wait_for, worker_process

TWO = {"rung": "dropout_head", "seeds": 1, "device": "cpu", "gpus": 2}


def test_a_trial_for_two_devices_goes_to_a_worker_that_offers_two(db_url: str) -> None:
    with make_client(db_url) as client:
        run = report(client)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications", json=TWO).json()["id"]
        db = Database(db_url)
        source = LocalSource(db, lease_s=30)
        try:
            one = Worker(source, devices=("cpu",), poll_s=0.1, threads=1)
            assert not one.run_once(), "one device is not two"
            assert job_row(db_url, job_id).status == JobStatus.QUEUED
            two = Worker(source, devices=("cpu", "cpu"), poll_s=0.1, threads=1)
            trained = 0
            while two.run_once():  # a trial each, until none is left
                trained += 1
        finally:
            source.close()
            db.dispose()
        assert trained == 2, "the baseline and the candidate"
        placed = sorted(t.device for t in trial_rows(db_url, job_id))
        job = wait(client, job_id, timeout=5)
        assert job["status"] == "succeeded" and job["gpus"] == 2, job
        assert placed == ["2xcpu", "2xcpu"], "baseline and candidate each across two processes"
        assert len(job["result"]["child_runs"]) == 1
        assert training_processes() == []


def test_a_killed_training_process_fails_the_attempt_and_the_trial_is_retried(
    db_url: str, tmp_path: Path
) -> None:
    slow = {**RECIPE, "epochs": 6}
    with make_client(db_url) as client:
        run = report(client, slow)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications", json=TWO).json()["id"]
        log = tmp_path / "w.log"
        with worker_process(db_url, log, lease_s=5, devices="cpu,cpu") as worker:
            wait_for(lambda: any(len(t.curve) >= 2 for t in trial_rows(db_url, job_id)),
                     timeout=240)  # fmt: skip
            ranks = training_processes(worker.pid)
            assert len(ranks) == 2
            os.kill(ranks[-1], signal.SIGKILL)
            wait_for(lambda: any(t.error for t in trial_rows(db_url, job_id)), timeout=120)
            [failed] = [t for t in trial_rows(db_url, job_id) if t.error]
            assert "a training process failed" in (failed.error or ""), failed.error
            # Queued again (or claimed again already), with nothing of the failed attempt.
            assert failed.status in (TrialStatus.QUEUED, TrialStatus.RUNNING)
            assert failed.status == TrialStatus.RUNNING or failed.curve == []
            job = job_row(db_url, job_id)
            assert not job.status.finished, "retried within the trial's attempts"
            assert job.result is None and job.verdict is None
            db = Database(db_url)
            with db.session() as session:
                children = session.scalars(select(Run.id).where(Run.parent_id == run["id"])).all()
                stored = session.execute(
                    select(Trial.status, Trial.curve).where(Trial.verification_id == job_id)
                ).all()
            db.dispose()
            assert children == [], "no child run from the failed attempt"
            assert all(
                len(curve) == slow["epochs"] for status, curve in stored if status == "done"
            ), "no half trial stored"
            job_out = wait(client, job_id, timeout=600)
        assert job_out["status"] == "succeeded", job_out
        retried = {t.id: t for t in trial_rows(db_url, job_id)}[failed.id]
        assert retried.status == TrialStatus.DONE and retried.attempts == 2
        assert claimed(log).count(failed.id) == 2
        assert len(job_out["result"]["child_runs"]) == 1
