"""Idempotency-Key on creating a run, on SQLite and PostgreSQL: the same key with the same body
answers the run it made, with another body 422 and nothing stored, and replays sent at once
store one run."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.conftest import healthy_epochs, overfit_epochs

BODY = {"name": "keyed", "tags": ["a", "b"], "params": {"lr": 0.01}, "epochs": overfit_epochs()}
OTHER = {**BODY, "epochs": overfit_epochs(12)}


def post(client: TestClient, body: dict[str, Any], key: str) -> httpx2.Response:
    return client.post("/api/v1/runs", json=body, headers={"Idempotency-Key": key})


def stored(db_url: str) -> list[tuple[int, str | None]]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, idempotency_key FROM runs ORDER BY id")).all()
    engine.dispose()
    return [(row[0], row[1]) for row in rows]


def test_the_same_body_answers_the_stored_run_and_another_body_is_refused(
    client: TestClient, db_url: str
) -> None:
    first = post(client, BODY, "k-1")
    assert first.status_code == 201, first.text
    # The same request, its keys in another order and spaced otherwise: the same body.
    shuffled = json.dumps(dict(reversed(list(BODY.items()))), indent=2)
    again = client.post(
        "/api/v1/runs",
        content=shuffled,
        headers={"Idempotency-Key": "k-1", "Content-Type": "application/json"},
    )
    assert again.status_code == 200 and again.json() == first.json()

    changes: list[dict[str, Any]] = [
        OTHER, {**BODY, "name": "renamed"}, {**BODY, "tags": ["a"]}, {"epochs": []},
    ]  # fmt: skip
    for changed in changes:
        r = post(client, changed, "k-1")
        assert r.status_code == 422, r.text
        assert r.json() == {
            "message": "idempotency-key: 'k-1' was already used for a different request; a "
            "retry must send the same body, and a new run needs a new key",
            "field": "idempotency-key",
        }
    assert stored(db_url) == [(first.json()["id"], "k-1")]
    # After the refusals the key still answers its own request, and a new key makes a new run.
    assert post(client, BODY, "k-1").json() == first.json()
    assert post(client, OTHER, "k-2").status_code == 201
    assert len(stored(db_url)) == 2


def test_a_run_stored_before_fingerprints_answers_its_key_whatever_the_body(
    client: TestClient, db_url: str
) -> None:
    first = post(client, BODY, "old-key")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE runs SET idempotency_fingerprint = NULL"))
    engine.dispose()
    r = post(client, OTHER, "old-key")
    assert r.status_code == 200 and r.json() == first.json()


def at_once(client: TestClient, bodies: list[dict[str, Any]], key: str) -> list[httpx2.Response]:
    """Each body posted with ``key`` from its own thread, all released together."""
    start = threading.Barrier(len(bodies))

    def send(body: dict[str, Any]) -> httpx2.Response:
        start.wait()
        return post(client, body, key)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_twenty_replays_at_once_store_one_run(client: TestClient, db_url: str) -> None:
    """Twenty requests with one key at the same moment, half of them with another body: one run
    is stored; the requests with its body answer it, the others are refused."""
    bodies = [BODY if i % 2 else {**BODY, "epochs": healthy_epochs()} for i in range(20)]
    answers = at_once(client, bodies, "burst")
    [(run_id, _)] = stored(db_url)
    created = [r for r in answers if r.status_code == 201]
    assert len(created) == 1 and created[0].json()["id"] == run_id
    winner = bodies[answers.index(created[0])]
    for body, r in zip(bodies, answers, strict=True):
        if body == winner:
            assert r.status_code in (200, 201) and r.json()["id"] == run_id, r.text
        else:
            assert r.status_code == 422 and r.json()["field"] == "idempotency-key", r.text

    answers = at_once(client, [BODY] * 20, "burst-2")
    assert sorted(r.status_code for r in answers) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len(stored(db_url)) == 2


def test_the_refusal_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/api/v1/runs"]["post"]
    assert "Idempotency-Key" in operation["responses"]["422"]["description"]
    [header] = [p for p in operation["parameters"] if p["name"] == "idempotency-key"]
    assert "422" in header["description"]
