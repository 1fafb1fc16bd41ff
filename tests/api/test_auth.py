"""Tokens: missing, wrong and other-project tokens; runs are visible only to their project."""

import pytest
from pydantic import ValidationError

from app.db import Database
from app.services.projects import create_project
from app.settings import Settings
from tests.conftest import make_client, overfit_epochs


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
