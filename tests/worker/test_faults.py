"""A verification's effects happen exactly once, whatever happens to a worker: SIGKILL, or SIGSTOP
past its lease and SIGCONT after another worker took its trial over and finished the
verification, at each step of a trial — just after the claim, mid-training, and after the last
epoch. The stalled worker notices it lost the lease, says so and writes nothing more: one result,
one set of rung verdicts, one set of child runs."""

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db import Database
from app.models import Run, RungVerdict, Trial, TrialStatus
from tests.conftest import make_client
from tests.worker.test_verification_api import RECIPE, report, wait
from tests.worker.test_workers import job_row, trial_rows, wait_for, worker_process

FAULT = {**RECIPE, "epochs": 6, "data": {"kind": "digits", "image_size": 16}}


def finished(url: str, job_id: int) -> bool:
    return job_row(url, job_id).status.finished


def running(trials: list[Trial]) -> list[Trial]:
    return [t for t in trials if t.status == TrialStatus.RUNNING]


QUICK = {("SIGKILL", "claimed"), ("SIGSTOP", "mid-training"), ("SIGSTOP", "after the last epoch")}
STEPS = {
    # the worker holds a trial's lease and has started training it, but not finished an epoch
    "claimed": lambda trials: any(not t.curve for t in running(trials)),
    "mid-training": lambda trials: any(len(t.curve) >= 3 for t in running(trials)),
    # a trial's last epoch was reported: it is being handed in, or was, and the next one claimed
    "after the last epoch": lambda trials: any(len(t.curve) == FAULT["epochs"] for t in trials),
}


# Three of the six run in `make test`; `make test-all` runs the whole matrix.
MATRIX = [
    pytest.param(fault, step, marks=[] if (fault, step) in QUICK else [pytest.mark.slow])
    for fault in ("SIGKILL", "SIGSTOP")
    for step in STEPS
]


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("fault", "step"), MATRIX)
def test_each_verifications_effects_happen_once(
    db_url: str, tmp_path: Path, fault: str, step: str
) -> None:
    with make_client(db_url) as client:
        run = report(client, FAULT)
        job_id = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "dropout_head", "seeds": 1}).json()["id"]  # fmt: skip
        with worker_process(db_url, tmp_path / "a.log", lease_s=1.5) as first:
            wait_for(lambda: STEPS[step](trial_rows(db_url, job_id)), timeout=240)
            first.send_signal(getattr(signal, fault))
            with worker_process(db_url, tmp_path / "b.log", lease_s=1.5):
                if fault == "SIGSTOP":
                    # On SQLite a worker stopped inside a write holds the one write lock: nobody
                    # writes until it runs again. Give the second worker a while, then resume.
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline and not finished(db_url, job_id):
                        time.sleep(0.2)
                    first.send_signal(signal.SIGCONT)
                job = wait(client, job_id, timeout=600)
            if fault == "SIGSTOP":
                time.sleep(4)  # its heartbeat finds the lease gone; it must write nothing
        job = wait(client, job_id)
        assert job["status"] == "succeeded", job
        # Either the first worker finished its trial before the fault took hold, or the second
        # took it over: once, and only that one trial.
        trials = trial_rows(db_url, job_id)
        assert len(trials) == 2 and all(t.status == TrialStatus.DONE for t in trials)
        assert all(len(t.curve) == FAULT["epochs"] for t in trials)
        taken_over = [t for t in trials if t.attempts == 2]
        assert len(taken_over) <= 1 and all(t.attempts in (1, 2) for t in trials)
        children = job["result"]["child_runs"]
        assert len(children) == 1
        db = Database(db_url)
        with db.session() as session:
            derived = session.scalars(select(Run.id).where(Run.parent_id == run["id"])).all()
            verdicts = session.scalars(
                select(RungVerdict.rung).where(RungVerdict.verification_id == job_id)
            ).all()
        db.dispose()
        assert derived == children, "one child run per candidate training, stored once"
        assert verdicts == ["dropout_head"]
        if fault == "SIGSTOP" and taken_over:
            said = (tmp_path / "a.log").read_text()
            assert f"trial {taken_over[0].id}: the lease was lost" in said, said[-2000:]
