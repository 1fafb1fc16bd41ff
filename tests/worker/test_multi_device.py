"""Jobs that spread each retrain over several devices (gloo processes on the CPU here): only a
worker offering as many takes them, and a training process that dies fails the attempt cleanly
— the job is retried and nothing of the failed attempt is stored."""

import os
import signal
from pathlib import Path

from sqlalchemy import select

from app.db import Database
from app.models import JobStatus, Run, Trial
from app.worker.worker import Worker
from tests.conftest import make_client
from tests.training.test_distributed import training_processes
from tests.worker.test_verification_api import RECIPE, report, wait
from tests.worker.test_workers import job_row, wait_for, worker_process

TWO = {"rung": "dropout_head", "seeds": 1, "device": "cpu", "gpus": 2}


def test_a_job_for_two_devices_goes_to_a_worker_that_offers_two(db_url: str) -> None:
    with make_client(db_url) as client:
        run = report(client)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications", json=TWO).json()["id"]
        db = Database(db_url)
        try:
            assert not Worker(db, devices=("cpu",), threads=1).run_once(), "one device is not two"
            assert job_row(db_url, job_id).status == JobStatus.QUEUED
            assert Worker(db, devices=("cpu", "cpu"), threads=1).run_once()
            with db.session() as session:
                trials = session.scalars(select(Trial).where(Trial.verification_id == job_id))
                placed = sorted(t.device for t in trials)
        finally:
            db.dispose()
        job = wait(client, job_id, timeout=5)
        assert job["status"] == "succeeded" and job["gpus"] == 2, job
        assert placed == ["2xcpu", "2xcpu"], "baseline and candidate each across two processes"
        assert len(job["result"]["child_runs"]) == 1
        assert training_processes() == []


def test_a_killed_training_process_fails_the_attempt_and_the_job_is_retried(
    db_url: str, tmp_path: Path
) -> None:
    slow = {**RECIPE, "epochs": 6}
    with make_client(db_url) as client:
        run = report(client, slow)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications", json=TWO).json()["id"]
        with worker_process(db_url, tmp_path / "w.log", lease_s=5, devices="cpu,cpu") as worker:
            wait_for(lambda: (job_row(db_url, job_id).progress or {}).get("epochs_done", 0) >= 2,
                     timeout=240)  # fmt: skip
            ranks = training_processes(worker.pid)
            assert len(ranks) == 2
            os.kill(ranks[-1], signal.SIGKILL)
            wait_for(lambda: bool(job_row(db_url, job_id).error), timeout=120)
            failed = job_row(db_url, job_id)
            assert "a training process failed" in (failed.error or ""), failed.error
            assert failed.result is None and failed.verdict is None
            db = Database(db_url)
            with db.session() as session:
                children = session.scalars(select(Run.id).where(Run.parent_id == run["id"])).all()
                stored = session.scalars(
                    select(Trial.curve).where(Trial.verification_id == job_id)
                ).all()
            db.dispose()
            assert children == [], "no child run from the failed attempt"
            assert all(len(curve) == slow["epochs"] for curve in stored), "no half trial stored"
            job = wait(client, job_id, timeout=600)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert len(job["result"]["child_runs"]) == 1
