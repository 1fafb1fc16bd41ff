"""Tokens: missing, wrong and other-project tokens; runs and verifications are visible only to
their project, and another project's answer exactly as missing ones do, on every endpoint and
page that takes an id."""

from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.db import Database
from app.services.projects import create_project
from app.settings import Settings
from tests.conftest import make_client, overfit_epochs
from tests.worker.test_verification_api import RECIPE


def tokens(url: str, *names: str) -> list[str]:
    db = Database(url)
    with db.session() as session:
        out = [create_project(session, name)[1] for name in names]
    db.dispose()
    return out


def test_requests_without_a_valid_token_are_refused(db_url: str) -> None:
    (token,) = tokens(db_url, "alice")
    with make_client(db_url, auth="required") as client:
        r = client.get("/api/v1/runs")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert "token" in r.json()["message"]
        r = client.post(
            "/api/v1/runs",
            json={"epochs": overfit_epochs()},
            headers={"Authorization": "Bearer oa_wrong"},
        )
        assert r.status_code == 401
        r = client.get("/api/v1/runs", headers={"Authorization": f"Basic {token}"})
        assert r.status_code == 401
        ok = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        # Health and the ladder need no token.
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/v1/ladder").status_code == 200


def test_a_project_sees_only_its_own_runs(db_url: str) -> None:
    alice, bob = tokens(db_url, "alice", "bob")
    a = {"Authorization": f"Bearer {alice}"}
    b = {"Authorization": f"Bearer {bob}"}
    with make_client(db_url, auth="required") as client:
        run = client.post(
            "/api/v1/runs", json={"name": "a1", "epochs": overfit_epochs()}, headers=a
        )
        assert run.status_code == 201
        assert run.json()["project"] == "alice"
        run_id = run.json()["id"]
        assert client.get(f"/api/v1/runs/{run_id}", headers=a).status_code == 200
        for path in (f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/lineage"):
            r = client.get(path, headers=b)
            assert r.status_code == 404
            assert r.json()["message"] == f"run {run_id} not found"
        r = client.post(
            f"/api/v1/runs/{run_id}/epochs",
            headers=b,
            json={"epochs": [{"epoch": 99, "train_loss": 0.1, "valid_loss": 0.1}]},
        )
        assert r.status_code == 404
        assert client.get("/api/v1/runs", headers=b).json()["items"] == []
        assert [r["id"] for r in client.get("/api/v1/runs", headers=a).json()["items"]] == [run_id]
        # Bob cannot write into Alice's project, nor derive a run from hers.
        r = client.post(
            "/api/v1/runs", json={"project": "alice", "epochs": overfit_epochs()}, headers=b
        )
        assert r.status_code == 403
        assert "project" in r.json()["message"]
        r = client.post(
            "/api/v1/runs", json={"parent_id": run_id, "epochs": overfit_epochs()}, headers=b
        )
        assert r.status_code == 422
        assert "parent_id" in r.json()["message"]
        assert client.get("/api/v1/runs", headers=b).json()["items"] == []


def test_only_the_token_hash_is_stored(db_url: str) -> None:
    (token,) = tokens(db_url, "carol")
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        stored = [row[0] for row in conn.execute(text("SELECT token_hash FROM api_tokens"))]
    engine.dispose()
    assert token not in stored
    assert len(stored) == 1
    assert len(stored[0]) == 64


def test_auth_is_required_off_loopback() -> None:
    assert not Settings(host="127.0.0.1").auth_required
    assert not Settings(host="::1").auth_required
    assert Settings(host="0.0.0.0").auth_required
    assert Settings(host="10.1.2.3", auth="required").auth_required
    assert Settings(host="127.0.0.1", auth="required").auth_required
    with pytest.raises(ValidationError, match="ADVISOR_AUTH=off is refused"):
        Settings(host="0.0.0.0", auth="off")


def as_missing(
    client: TestClient, method: str, path: str, theirs: int, missing: int, **request: Any
) -> httpx2.Response:
    """Ask for another project's ``theirs`` and for ``missing``, which no project has, at
    ``path`` ("{}" is the id): both answer 404 with the same body, but for the id asked in its
    "... not found"."""
    answers = [client.request(method, path.format(i), **request) for i in (theirs, missing)]
    assert [r.status_code for r in answers] == [404, 404], [r.text for r in answers]
    bodies = [
        r.text.replace(f" {i} not found", " {} not found")
        for r, i in zip(answers, (theirs, missing), strict=True)
    ]
    assert bodies[0] == bodies[1]
    return answers[0]


def test_another_projects_ids_answer_exactly_like_missing_ones(db_url: str) -> None:
    alice, bob = tokens(db_url, "alice", "bob")
    a = {"Authorization": f"Bearer {alice}"}
    b = {"Authorization": f"Bearer {bob}"}
    with make_client(db_url, auth="required") as client:
        # Bob's runs come first, so that Alice's run and her verification have different ids.
        for _ in range(3):
            client.post("/api/v1/runs", json={"epochs": overfit_epochs()}, headers=b)
        body = {"name": "digits", "recipe": RECIPE, "epochs": overfit_epochs()}
        run_id = client.post("/api/v1/runs", json=body, headers=a).json()["id"]
        job = client.post(
            f"/api/v1/runs/{run_id}/verifications", json={"rung": "augment"}, headers=a
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        assert run_id != job_id
        missing = 10**6

        for method, path in (("GET", "/api/v1/verifications/{}"),
                             ("POST", "/api/v1/verifications/{}/cancel")):  # fmt: skip
            r = as_missing(client, method, path, job_id, missing, headers=b)
            # Nothing of Alice's: only the verification Bob asked for is named.
            assert r.json() == {"message": f"verification {job_id} not found"}
        for method, path, json in (
            ("GET", "/api/v1/runs/{}", None),
            ("GET", "/api/v1/runs/{}/lineage", None),
            ("POST", "/api/v1/runs/{}/epochs",
             {"epochs": [{"epoch": 99, "train_loss": 0.1, "valid_loss": 0.1}]}),
            ("POST", "/api/v1/runs/{}/verifications", {"rung": "augment"}),
        ):  # fmt: skip
            r = as_missing(client, method, path, run_id, missing, headers=b, json=json)
            assert r.json() == {"message": f"run {run_id} not found"}
        # The pages, with Bob signed in.
        client.cookies.set("advisor_token", bob)
        for method, path, theirs, data in (
            ("GET", "/runs/{}", run_id, None),
            ("POST", "/runs/{}/verify", run_id, {"rung": "augment"}),
            ("GET", "/verifications/{}", job_id, None),
            ("POST", "/verifications/{}/cancel", job_id, None),
        ):
            r = as_missing(client, method, path, theirs, missing, data=data)
            assert "Not found" in r.text
        client.cookies.clear()
        # Lists filtered by Alice's run find nothing, as for a run that does not exist.
        for run in (run_id, missing):
            listed = client.get("/api/v1/verifications", params={"run_id": run}, headers=b)
            assert listed.status_code == 200 and listed.json() == []
        assert client.get("/api/v1/verifications", headers=b).json() == []

        # Bob changed nothing of Alice's.
        mine = client.get(f"/api/v1/verifications/{job_id}", headers=a).json()
        assert mine["status"] == "queued" and not mine["cancel_requested"]
        assert client.get(f"/api/v1/runs/{run_id}", headers=a).json()["n_epochs"] == 20
        assert client.get("/api/v1/verifications", headers=a).json()[0]["id"] == job_id


def test_an_idempotency_key_is_the_projects_own(db_url: str) -> None:
    """The same key in another project is another request: Bob's run is created, Alice's key
    still answers hers, and neither answer tells one of the other."""
    alice, bob = tokens(db_url, "alice", "bob")
    with make_client(db_url, auth="required") as client:

        def post(token: str, epochs: int) -> httpx2.Response:
            return client.post(
                "/api/v1/runs",
                json={"name": "keyed", "epochs": overfit_epochs(epochs)},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "same-key"},
            )

        hers = post(alice, 20)
        his = post(bob, 12)
        assert (hers.status_code, his.status_code) == (201, 201)
        assert his.json()["project"] == "bob" and his.json()["id"] != hers.json()["id"]
        assert post(bob, 20).status_code == 422  # his key, another body than his
        again = post(alice, 20)
        assert again.status_code == 200 and again.json() == hers.json()
