"""Real processes for the worker API's tests: ``advisor serve`` on a test database (either
backend), with its embedded worker off, that can be killed and started again on the same port;
``advisor worker --server URL`` with no database settings; and readings of the database that
say what was stored."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db import Database
from app.models import ApiToken, Project, Run, RungVerdict, Trial, Verification
from app.services.projects import create_project, issue_token
from tests.conftest import overfit_epochs
from tests.servers import free_port
from tests.worker.test_verification_api import RECIPE

# Tiny trainings: digits, a few epochs. FAST takes about 0.15 s an epoch here, SLOW about 0.35 s,
# long enough to catch a worker in the middle of a trial.
FAST = {**RECIPE, "epochs": 2}
SLOW = {**RECIPE, "epochs": 4, "data": {"kind": "digits", "image_size": 32}}
# A database the HTTP workers could never reach: they must not need one.
NOWHERE = "postgresql://nowhere:1/none"


def _environ(**env: str) -> dict[str, str]:
    """This process's environment without its ADVISOR_* settings, with ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    return {**base, **env}


class Service:
    """``advisor serve`` on ``db_url``; ``kill`` and ``start`` again keep the port."""

    def __init__(self, db_url: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = _environ(ADVISOR_DATABASE_URL=db_url, ADVISOR_WORKER="off",
                            ADVISOR_LOG_LEVEL="warning", **env)  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"advisor serve did not become ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@contextmanager
def service(db_url: str, tmp_path: Path, **env: str) -> Iterator[Service]:
    """The service, started; fails the test if it printed a traceback."""
    svc = Service(db_url, tmp_path / f"server-{free_port()}.log", **env)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()
        said = svc.log.read_text()
        assert "Traceback" not in said, said[-5000:]


@contextmanager
def http_worker(
    base: str, log: Path, token: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``advisor worker --server base --devices cpu`` with one torch thread, with a database URL
    that goes nowhere (it needs none), the token (the fleet's or a project's) in
    ADVISOR_WORKER_TOKEN."""
    given = {"ADVISOR_WORKER_TOKEN": token} if token else {}
    env = _environ(ADVISOR_DATABASE_URL=NOWHERE, ADVISOR_WORKER_THREADS="1",
                   ADVISOR_LOG_LEVEL="info", **given)  # fmt: skip
    argv = [sys.executable, "-m", "app.cli", "worker", "--server", base, "--devices", "cpu"]
    with logged_process(argv, env, log) as proc:
        yield proc


@contextmanager
def logged_process(
    argv: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running with its output appended to ``log``; killed when the test is done with
    it (a graceful stop would wait out a long poll, seconds)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def name_prefix(proc: subprocess.Popen[bytes]) -> str:
    """How a worker process's name (and so its trials' lease owner) begins."""
    return f"{socket.gethostname()}:{proc.pid}:"


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"not reached in {timeout} s: {what}")


def ready(log: Path) -> bool:
    """The worker loaded torch and is about to claim."""
    return log.exists() and " ready (devices " in log.read_text()


def api(base: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def report(client: httpx.Client, recipe: dict[str, Any]) -> int:
    r = client.post("/api/v1/runs", json={"name": "digits", "recipe": recipe,
                                          "epochs": overfit_epochs()})  # fmt: skip
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def verify(client: httpx.Client, run_id: int, seeds: int = 1) -> int:
    r = client.post(f"/api/v1/runs/{run_id}/verifications",
                    json={"rung": "dropout_head", "seeds": seeds})  # fmt: skip
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


def finished(client: httpx.Client, job_id: int, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/v1/verifications/{job_id}").json()
        return job if job["finished"] else None

    job: dict[str, Any] = wait_for(f"verification {job_id} finished", done, timeout)
    return job


# --- what the database holds ---------------------------------------------------------------


def trials(db_url: str) -> list[Trial]:
    db = Database(db_url)
    try:
        with db.session() as session:
            rows = list(session.scalars(select(Trial).order_by(Trial.id)))
            session.expunge_all()
            return rows
    finally:
        db.dispose()


def running(db_url: str, prefix: str, epochs: int = 1) -> Trial | None:
    """A trial the worker whose names start with ``prefix`` holds, with ``epochs`` reported."""
    for row in trials(db_url):
        owner = row.lease_owner or ""
        if row.status == "running" and owner.startswith(prefix) and len(row.curve) >= epochs:
            return row
    return None


COLUMNS = {
    Trial: ("id", "status", "attempts", "worker", "lease_owner", "lease_expires_at", "curve",
            "figures", "device", "duration_s", "recipe_fingerprint", "role", "error"),
    Verification: ("id", "status", "verdict", "effect", "result", "progress", "error"),
    Run: ("id", "parent_id", "applied_rung", "source"),
    RungVerdict: ("id", "verification_id", "rung", "verdict"),
}  # fmt: skip


def stored(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """What the database holds that a worker's request could change, to compare before and
    after requests that must store nothing."""
    db = Database(db_url)
    try:
        with db.session() as session:
            return {
                model.__tablename__: [
                    tuple(getattr(row, c) for c in columns)
                    for row in session.scalars(select(model).order_by(model.id))  # type: ignore[attr-defined]
                ]
                for model, columns in COLUMNS.items()
            }
    finally:
        db.dispose()


def check_once(db_url: str, job: dict[str, Any], run_id: int) -> None:
    """The verification succeeded with one result, one set of rung verdicts and one child run
    per candidate training, each stored once."""
    assert job["status"] == "succeeded", job
    result = job["result"]
    candidates = [line for line in result["per_seed"] if line["role"] == "candidate"]
    assert len(result["child_runs"]) == len(candidates) >= 1, result
    db = Database(db_url)
    try:
        with db.session() as session:
            children = session.scalars(
                select(Run.id).where(Run.parent_id == run_id).order_by(Run.id)
            ).all()
            verdicts = session.scalars(
                select(RungVerdict.rung).where(RungVerdict.verification_id == job["id"])
            ).all()
            used = session.scalars(
                select(Trial).where(Trial.id.in_([line["trial_id"] for line in result["per_seed"]]))
            ).all()
    finally:
        db.dispose()
    assert list(children) == sorted(result["child_runs"]), "one child run per candidate training"
    assert list(verdicts) == ["dropout_head"], "one set of rung verdicts"
    assert len(used) == len(result["per_seed"]) and all(t.status == "done" for t in used)


# --- auth ------------------------------------------------------------------------------------


def make_project(db_url: str, name: str) -> tuple[int, str]:
    db = Database(db_url)
    try:
        with db.session() as session:
            project, token = create_project(session, name)
            return project.id, token
    finally:
        db.dispose()


def revoke(db_url: str, project_id: int) -> str:
    """Revoke every token of the project, as an operator does; a new token for it."""
    db = Database(db_url)
    try:
        with db.session() as session:
            for token in session.scalars(select(ApiToken).where(ApiToken.project_id == project_id)):
                token.revoked_at = datetime.now(UTC)
            project = session.get(Project, project_id)
            assert project is not None
            return issue_token(session, project)
    finally:
        db.dispose()


def logged_at(line: str) -> datetime:
    """When a worker's log line was written (logging's asctime: local time, milliseconds)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
