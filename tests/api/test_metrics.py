"""/metrics through prometheus-client, on SQLite and PostgreSQL: requests counted under their
route template (one shared label for paths that match none), the database's figures after
verifications' trials went through the real queue, several server processes adding up, and who
may read it."""

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import update

from app.advisor.diagnosis import Verdict
from app.db import Database
from app.models import Base, Trial, Verification, utcnow
from app.services import trials
from app.services.projects import create_project
from tests.conftest import healthy_epochs, make_client, overfit_epochs
from tests.worker.test_verification_api import RECIPE, report

REQUESTS = "advisor_http_requests_total"
LATENCY = "advisor_http_request_duration_seconds"


def parse(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def scrape(client: TestClient, token: str | None = None) -> list[Sample]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(r.text)


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the series ``name`` with exactly these labels; None when it is not there."""
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else None


def rise(before: list[Sample], after: list[Sample], name: str, **labels: str) -> float:
    """How much a counter rose; a series first counted in between rose from nothing."""
    later = value(after, name, **labels)
    assert later is not None, f"{name}{labels} missing"
    return later - (value(before, name, **labels) or 0.0)


def post_run(client: TestClient, epochs: list[dict[str, Any]]) -> dict[str, Any]:
    r = client.post("/api/v1/runs", json={"epochs": epochs})
    assert r.status_code == 201, r.text
    run: dict[str, Any] = r.json()
    return run


def series(samples: list[Sample]) -> set[tuple[str, str, str]]:
    """The (route, method, status) of every request counter."""
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"])
        for s in samples
        if s.name == REQUESTS
    }


def buckets(samples: list[Sample], name: str, *bounds: str) -> list[float | None]:
    """A histogram's cumulative counts at these bounds."""
    return [value(samples, f"{name}_bucket", le=le) for le in bounds]


def verify(client: TestClient, run_id: int, seeds: list[int]) -> int:
    body = {"rung": "augment", "seeds": seeds}
    r = client.post(f"/api/v1/runs/{run_id}/verifications", json=body)
    assert r.status_code == 202, r.text
    job_id: int = r.json()["id"]
    return job_id


def shift(db: Database, model: type[Base], row_id: int, **seconds: float) -> None:
    """Move timestamps of a row by so many seconds, as if that much time had passed."""
    with db.session() as session:
        row = session.get(model, row_id)
        assert row is not None
        for column, by in seconds.items():
            setattr(row, column, getattr(row, column) + timedelta(seconds=by))


def claim(db: Database, worker: str) -> trials.Claimed:
    with db.session() as session:
        trial = trials.claim(session, worker, devices=1, lease_s=60)
    assert trial is not None
    return trial


def hand_in(db: Database, trial: trials.Claimed, worker: str) -> None:
    """The trial trained, as a worker reports it (the curve made up)."""
    curve = [{"epoch": i, "train_loss": 1.0, "valid_loss": 1.0, "metrics": {"accuracy": 0.5}}
             for i in range(trial.epochs)]  # fmt: skip
    with db.session() as session:
        trials.complete(session, trial.id, worker, curve=curve, n_train=100, n_classes=10,
                        duration_s=1.0, device="cpu")  # fmt: skip


# --- HTTP requests --------------------------------------------------------------------------


def test_requests_count_under_their_route_template(client: TestClient) -> None:
    run_id = post_run(client, overfit_epochs())["id"]
    before = scrape(client)
    for _ in range(3):
        assert client.get(f"/api/v1/runs/{run_id}").status_code == 200
    assert client.get("/api/v1/runs/987654").status_code == 404
    after = scrape(client)
    route = {"route": "/api/v1/runs/{run_id}", "method": "GET"}
    for status, n in (("200", 3), ("404", 1)):
        assert rise(before, after, REQUESTS, **route, status=status) == n
        assert rise(before, after, f"{LATENCY}_count", **route, status=status) == n
        assert rise(before, after, f"{LATENCY}_bucket", **route, status=status, le="+Inf") == n
    routes = {s.labels["route"] for s in after if s.name == REQUESTS}
    assert routes == {"/api/v1/runs", "/api/v1/runs/{run_id}", "/metrics"}


def test_paths_that_match_no_route_share_one_label(client: TestClient) -> None:
    client.get("/healthz")
    before = scrape(client)
    hostile = [f"/{uuid.uuid4().hex}", f"/api/v1/{uuid.uuid4().hex}/x", f"/api/v9/{'a' * 300}"]
    for path in hostile:
        assert client.get(path).status_code == 404
    assert client.request("FROBNICATE", "/api/v1/runs").status_code == 405
    for _ in range(2):  # under a mount: its template
        assert client.get(f"/static/{uuid.uuid4().hex}.css").status_code == 404
    after = scrape(client)
    assert rise(before, after, REQUESTS, route="unmatched", method="GET", status="404") == 3
    assert rise(before, after, REQUESTS, route="/api/v1/runs", method="other", status="405") == 1
    assert rise(before, after, REQUESTS, route="/static/{path}", method="GET", status="404") == 2
    assert series(after) - series(before) == {
        ("unmatched", "GET", "404"), ("/api/v1/runs", "other", "405"),
        ("/static/{path}", "GET", "404"), ("/metrics", "GET", "200"),
    }  # fmt: skip


# --- what the database holds ----------------------------------------------------------------


def test_runs_by_verdict(client: TestClient) -> None:
    for epochs in (overfit_epochs(), overfit_epochs(), healthy_epochs(), overfit_epochs(3)):
        post_run(client, epochs)
    samples = scrape(client)
    expected = dict.fromkeys((v.value for v in Verdict), 0) | {
        "overfitting": 2, "healthy": 1, "insufficient_data": 1,
    }  # fmt: skip
    assert {v: value(samples, "advisor_runs", verdict=v) for v in expected} == expected


def test_jobs_through_the_queue(client: TestClient, db_url: str) -> None:
    """Five verifications (seeds of their own, so that they share no trial): one succeeded, one
    failed, one running, one queued, one cancelled; all queued 1000 s ago, the succeeded one
    started 600 s before it ended."""
    run = report(client)
    jobs = [verify(client, run["id"], [2 * i, 2 * i + 1]) for i in range(5)]
    assert client.post(f"/api/v1/verifications/{jobs[4]}/cancel").status_code == 200
    db = Database(db_url)
    try:
        with db.session() as session:
            queued_at = utcnow() - timedelta(seconds=1000)
            session.execute(
                update(Verification).where(Verification.id.in_(jobs)).values(created_at=queued_at)
            )
        # The oldest trials first: the first verification's two pairs, trained by one worker.
        pairs = [claim(db, "w-done") for _ in range(4)]
        assert {t.verification_id for t in pairs} == {jobs[0]}
        shift(db, Verification, jobs[0], started_at=-600)
        for trial in pairs:
            hand_in(db, trial, "w-done")
        doomed = claim(db, "w-failed")
        assert doomed.verification_id == jobs[1]
        with db.session() as session:
            trials.fail(session, doomed.id, "w-failed", error="RuntimeError: boom", final=True)
        busy = claim(db, "w-busy")
        assert busy.verification_id == jobs[2]
        shift(db, Trial, busy.id, heartbeat_at=-45)
    finally:
        db.dispose()

    samples = scrape(client)
    statuses = {"queued": 1, "running": 1, "succeeded": 1, "failed": 1, "cancelled": 1}
    assert {s: value(samples, "advisor_verifications", status=s) for s in statuses} == statuses

    # Waits: about 400 s (started 600 s back), 1000 s and 1000 s.
    wait = "advisor_verification_queue_wait_seconds"
    assert buckets(samples, wait, "300.0", "900.0", "1800.0") == [0, 1, 3]
    assert value(samples, f"{wait}_count") == 3
    assert 2390 < (value(samples, f"{wait}_sum") or 0) < 2460
    # Durations: about 600 s and nothing (failed at once); the running one has not ended.
    took = "advisor_verification_duration_seconds"
    assert buckets(samples, took, "1.0", "300.0", "900.0") == [1, 1, 2]
    assert value(samples, f"{took}_count") == 2
    assert 599 < (value(samples, f"{took}_sum") or 0) < 630

    ages = [s for s in samples if s.name == "advisor_worker_heartbeat_age_seconds"]
    assert [s.labels for s in ages] == [{"worker": "w-busy"}]
    assert 44 < ages[0].value < 75


def test_trials_by_device(client: TestClient, db_url: str) -> None:
    epochs = [{"epoch": i, "train_loss": 1.0, "valid_loss": 1.0} for i in range(10)]
    db = Database(db_url)
    try:
        with db.session() as session:
            session.add_all(
                Trial(role="baseline", recipe_fingerprint=f"r{seed}", seed=seed, recipe={},
                      curve=epochs[:n], figures={}, duration_s=seconds, device=device)
                for seed, (device, n, seconds) in enumerate(
                    [("cpu", 4, 2.0), ("cpu", 6, 3.0), ("cuda:0", 10, 0.5)]
                )
            )  # fmt: skip
    finally:
        db.dispose()
    samples = scrape(client)
    rates = {
        s.labels["device"]: s.value for s in samples if s.name == "advisor_trial_epochs_per_second"
    }
    assert rates == {"cpu": 2.0, "cuda:0": 20.0}
    trial = "advisor_trial_duration_seconds"
    assert buckets(samples, trial, "1.0", "5.0", "+Inf") == [1, 3, 3]
    assert value(samples, f"{trial}_count") == 3
    assert value(samples, f"{trial}_sum") == 5.5


# --- several server processes ---------------------------------------------------------------

SERVE = """
import sys
from fastapi.testclient import TestClient
from app.main import create_app
from app.settings import Settings
url, n, then = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with TestClient(create_app(Settings(database_url=url, worker="off"))) as client:
    for _ in range(n):
        client.get("/healthz")
    if then == "scrape":
        print(client.get("/metrics").text)
"""


def test_processes_sharing_a_multiprocess_dir_add_up(db_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    root = Path(__file__).parents[2]
    outputs = [
        subprocess.run([sys.executable, "-c", SERVE, db_url, str(n), then], env=env, cwd=root,
                       capture_output=True, text=True, timeout=120, check=True).stdout
        for n, then in ((2, "exit"), (3, "scrape"))
    ]  # fmt: skip
    samples = parse(outputs[1])
    assert value(samples, REQUESTS, route="/healthz", method="GET", status="200") == 5
    assert value(samples, "advisor_runs", verdict="overfitting") == 0


# --- who may read it ------------------------------------------------------------------------


def test_metrics_need_a_project_or_the_metrics_token_when_auth_is_required(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as session:
        _, token = create_project(session, "ops")
    db.dispose()
    metrics_token = "m-" + uuid.uuid4().hex
    with make_client(db_url, auth="required", metrics_token=metrics_token) as client:
        r = client.get("/metrics")
        assert r.status_code == 401
        assert "token" in r.json()["message"]
        assert r.headers["www-authenticate"] == "Bearer"
        for wrong in ("oa_wrong", metrics_token[:-1], metrics_token + "x"):
            r = client.get("/metrics", headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401, wrong
            assert r.json()["message"]
        assert value(scrape(client, token), "advisor_runs", verdict="overfitting") == 0
        assert value(scrape(client, metrics_token), "advisor_runs", verdict="overfitting") == 0
        # The metrics token opens /metrics and nothing else.
        bearer = {"Authorization": f"Bearer {metrics_token}"}
        assert client.get("/api/v1/runs", headers=bearer).status_code == 401
    with make_client(db_url, auth="required") as client:  # no metrics token configured
        assert client.get("/metrics", headers=bearer).status_code == 401
        scrape(client, token)
    with make_client(db_url, metrics_token=metrics_token) as client:  # auth off on loopback
        scrape(client)


def test_a_project_token_sees_only_its_projects_figures(db_url: str) -> None:
    """Alice has two overfitting runs; Bob a healthy one, verified by a job that a worker holds,
    which trained one trial; one more trial belongs to no job. The metrics token (and anyone
    while auth is off) sees everything; a project's token its own rows, and no request counts
    (they count every project's requests)."""
    db = Database(db_url)
    with db.session() as session:
        _, alice = create_project(session, "alice")
        _, bob = create_project(session, "bob")
    metrics_token = "m-" + uuid.uuid4().hex
    with make_client(db_url, auth="required", metrics_token=metrics_token) as client:

        def post(token: str, path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
            r = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status, r.text
            answer: dict[str, Any] = r.json()
            return answer

        for _ in range(2):
            post(alice, "/api/v1/runs", {"epochs": overfit_epochs()}, 201)
        run = post(bob, "/api/v1/runs", {"recipe": RECIPE, "epochs": healthy_epochs()}, 201)
        job_id = post(bob, f"/api/v1/runs/{run['id']}/verifications", {"rung": "augment"}, 202)[
            "id"
        ]
        try:
            assert claim(db, "w-bob").verification_id == job_id
            curve = [{"epoch": i, "train_loss": 1.0, "valid_loss": 1.0} for i in range(10)]
            with db.session() as session:
                session.add_all(
                    Trial(verification_id=job, role="baseline", recipe_fingerprint=f"r{job}",
                          seed=0, recipe={}, curve=curve[:n], figures={}, duration_s=seconds,
                          device=device)
                    for job, device, n, seconds in ((job_id, "cpu", 4, 2.0),
                                                    (None, "cuda:0", 10, 0.5))
                )  # fmt: skip
        finally:
            db.dispose()
        everything = scrape(client, metrics_token)
        hers, his = scrape(client, alice), scrape(client, bob)
    with make_client(db_url) as client:  # auth off on loopback: everything, as before
        client.get("/healthz")
        open_view = scrape(client)

    def figures(samples: list[Sample]) -> dict[str, Any]:
        return {
            "runs": {v: value(samples, "advisor_runs", verdict=v)
                     for v in ("overfitting", "healthy")},
            "jobs": {s: value(samples, "advisor_verifications", status=s)
                     for s in ("queued", "running")},
            "waits": value(samples, "advisor_verification_queue_wait_seconds_count"),
            "trials": value(samples, "advisor_trial_duration_seconds_count"),
            "rates": {s.labels["device"]: s.value for s in samples
                      if s.name == "advisor_trial_epochs_per_second"},
            "workers": [s.labels["worker"] for s in samples
                        if s.name == "advisor_worker_heartbeat_age_seconds"],
            "requests": any(s.name.startswith("advisor_http_") for s in samples),
        }  # fmt: skip

    assert figures(everything) == figures(open_view) == {
        "runs": {"overfitting": 2, "healthy": 1}, "jobs": {"queued": 0, "running": 1},
        "waits": 1, "trials": 2, "rates": {"cpu": 2.0, "cuda:0": 20.0}, "workers": ["w-bob"],
        "requests": True,
    }  # fmt: skip
    assert figures(hers) == {
        "runs": {"overfitting": 2, "healthy": 0}, "jobs": {"queued": 0, "running": 0},
        "waits": 0, "trials": 0, "rates": {}, "workers": [], "requests": False,
    }  # fmt: skip
    assert figures(his) == {
        "runs": {"overfitting": 0, "healthy": 1}, "jobs": {"queued": 0, "running": 1},
        "waits": 1, "trials": 1, "rates": {"cpu": 2.0}, "workers": ["w-bob"], "requests": False,
    }  # fmt: skip
