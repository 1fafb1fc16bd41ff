"""The worker API at the HTTP level (``/api/v1/trials``), on both backends: what a claim hands
out, a late completion refused once the lease is lost, and bad input refused with a 4xx that
names the field, with nothing stored. Real processes against it: tests/worker/test_http_faults.py.
"""

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.schemas import ClaimedOut
from tests.conftest import make_client
from tests.worker.http_workers import FAST, stored
from tests.worker.test_verification_api import report

# Leases: long enough for a test's requests, or short, to run out within the test.
LEASE_S, SHORT_LEASE_S = 60.0, 3.0


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with make_client(db_url, worker_lease_s=LEASE_S) as c:
        yield c


@pytest.fixture
def short(db_url: str) -> Iterator[TestClient]:
    with make_client(db_url, worker_lease_s=SHORT_LEASE_S) as c:
        yield c


def queue_one(client: TestClient) -> dict[str, Any]:
    """A verification of one pair (a baseline and a candidate trial of FAST: 2 epochs)."""
    run = report(client, FAST)
    r = client.post(f"/api/v1/runs/{run['id']}/verifications",
                    json={"rung": "dropout_head", "seeds": 1})  # fmt: skip
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()
    return job


def claim(client: TestClient, worker: str, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/trials/claim", json={"worker": worker, **body})
    assert r.status_code == 200, r.text
    got: dict[str, Any] = r.json()
    return got


def epoch(i: float, **change: Any) -> dict[str, Any]:
    return {"epoch": i, "train_loss": 1.0 / (i + 1), "valid_loss": 0.9, "metrics":
            {"accuracy": 0.5 + 0.1 * i}, **change}  # fmt: skip


def done(worker: str, curve: list[dict[str, Any]], **change: Any) -> dict[str, Any]:
    return {"worker": worker, "curve": curve, "n_train": 1438, "n_classes": 10,
            "duration_s": 1.5, "device": "cpu", **change}  # fmt: skip


def test_a_claim_hands_out_the_oldest_trial_once(client: TestClient, db_url: str) -> None:
    r = client.post("/api/v1/trials/claim", json={"worker": "w1"})
    assert r.status_code == 204 and r.content == b"", "nothing queued: 204 at once"
    started = time.monotonic()
    r = client.post("/api/v1/trials/claim", json={"worker": "w1", "wait_s": 0.5})
    assert r.status_code == 204 and 0.45 <= time.monotonic() - started < 5, "a long poll waits"
    job = queue_one(client)
    first = claim(client, "w1")
    ClaimedOut.model_validate(first)
    assert (first["verification_id"], first["role"], first["seed"]) == (job["id"], "baseline", 0)
    assert first["recipe"]["epochs"] == first["epochs"] == 2
    assert first["attempt"] == 1 and first["lease_s"] == LEASE_S and first["gpus"] == 1
    second = claim(client, "w2")
    assert (second["role"], second["rung"]) == ("candidate", "dropout_head")
    assert client.post("/api/v1/trials/claim", json={"worker": "w3"}).status_code == 204
    assert client.get(f"/api/v1/verifications/{job['id']}").json()["status"] == "running"


def test_a_completion_after_the_lease_was_lost_is_refused(short: TestClient, db_url: str) -> None:
    client = short
    queue_one(client)
    trial = claim(client, "first")
    beat = client.post(f"/api/v1/trials/{trial['id']}/heartbeat",
                       json={"worker": "first", "curve": [epoch(0)]})  # fmt: skip
    assert beat.status_code == 200 and beat.json() == {"stop": False}
    time.sleep(SHORT_LEASE_S + 0.3)
    # Its lease ran out: even before anyone took the trial over, the first worker holds nothing.
    late = client.post(f"/api/v1/trials/{trial['id']}/heartbeat", json={"worker": "first"})
    assert late.status_code == 409, late.text
    lost = f"trial {trial['id']} is not held by first: its lease ran out or it ended"
    assert late.json() == {"message": lost}
    again = claim(client, "second")
    assert again["id"] == trial["id"] and again["attempt"] == 2, "the expired trial goes first"
    before = stored(db_url)
    whole = [epoch(0), epoch(1)]
    for path, body in [
        ("complete", done("first", whole)),
        ("heartbeat", {"worker": "first", "curve": whole}),
        ("fail", {"worker": "first", "error": "boom"}),
        ("release", {"worker": "first"}),
    ]:
        r = client.post(f"/api/v1/trials/{trial['id']}/{path}", json=body)
        assert r.status_code == 409, (path, r.text)
        assert r.json()["message"] == lost
    assert stored(db_url) == before, "nothing of the first worker's is stored"
    # The second worker's completion is the one kept.
    r = client.post(f"/api/v1/trials/{trial['id']}/complete", json=done("second", whole))
    assert r.status_code == 204, r.text
    row = next(t for t in stored(db_url)["trials"] if t[0] == trial["id"])
    assert row[1:4] == ("done", 2, "second") and row[6] == whole


def test_bad_input_names_the_field_and_stores_nothing(client: TestClient, db_url: str) -> None:
    queue_one(client)
    trial = claim(client, "w1")
    url = f"/api/v1/trials/{trial['id']}"
    whole = [epoch(0), epoch(1)]
    before = stored(db_url)
    # (what, path, body, field): the body as Python's json writes it, NaN and all.
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("NaN loss", "complete", done("w1", [epoch(0, valid_loss=float("nan")), epoch(1)]),
         "curve[0].valid_loss"),
        ("NaN loss", "heartbeat", {"worker": "w1", "curve": [epoch(0, train_loss=float("nan"))]},
         "curve[0].train_loss"),
        ("infinite metric", "complete",
         done("w1", [epoch(0), epoch(1, metrics={"accuracy": float("inf")})]),
         "curve[1].metrics.accuracy"),
        ("negative loss", "complete", done("w1", [epoch(0), epoch(1, valid_loss=-1.0)]),
         "curve[1].valid_loss"),
        ("epochs out of order", "complete", done("w1", [epoch(1), epoch(0)]), "curve[1].epoch"),
        ("epochs out of order", "heartbeat", {"worker": "w1", "curve": [epoch(1), epoch(0)]},
         "curve[1].epoch"),
        ("a duplicated epoch", "complete", done("w1", [epoch(0), epoch(0)]), "curve[1].epoch"),
        ("steps out of order", "complete",
         done("w1", [epoch(0, step=20), epoch(1, step=10)]), "curve[1].step"),
        # Figures for another trial: not this task's metric, more epochs than it trains, epochs
        # that are not its own, no training loss.
        ("another task's metric", "complete",
         done("w1", [epoch(0, metrics={"iou": 0.4}), epoch(1, metrics={"iou": 0.5})]),
         "curve[0].metrics.accuracy"),
        ("another task's metric", "heartbeat",
         {"worker": "w1", "curve": [epoch(0, metrics={"iou": 0.4})]}, "curve[0].metrics.accuracy"),
        ("more epochs than the trial's", "complete", done("w1", [epoch(i) for i in range(3)]),
         "curve"),
        ("more epochs than the trial's", "heartbeat",
         {"worker": "w1", "curve": [epoch(i) for i in range(5)]}, "curve"),
        ("epochs not from 0", "complete", done("w1", [epoch(1), epoch(2)]), "curve[0].epoch"),
        ("a fractional epoch", "complete", done("w1", [epoch(0), epoch(0.5)]), "curve[1].epoch"),
        ("no training loss", "complete", done("w1", [epoch(0), epoch(1, train_loss=None)]),
         "curve[1].train_loss"),
        ("an empty curve", "complete", done("w1", []), "curve"),
        ("no curve", "complete", {k: v for k, v in done("w1", whole).items() if k != "curve"},
         "curve"),
        ("a negative size", "complete", done("w1", whole, n_train=-1), "n_train"),
        ("zero classes", "complete", done("w1", whole, n_classes=0), "n_classes"),
        ("a NaN duration", "complete", done("w1", whole, duration_s=float("nan")), "duration_s"),
        ("an unknown device", "complete", done("w1", whole, device="tpu"), "device"),
        ("an unknown key", "complete", done("w1", whole, figures={"best_metric": 1.0}),
         "figures"),
        ("a number for a name", "heartbeat", {"worker": 7}, "worker"),
        ("no worker", "heartbeat", {"curve": whole}, "worker"),
        ("an empty error", "fail", {"worker": "w1", "error": ""}, "error"),
        ("a string for a flag", "fail", {"worker": "w1", "error": "x", "final": "yes"}, "final"),
    ]  # fmt: skip
    for what, path, body, field in cases:
        r = client.post(f"{url}/{path}", content=json.dumps(body),
                        headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 422, (what, path, r.text)
        answer = r.json()
        named = answer.get("field") or answer["detail"][0]["field"]
        assert named == field, (what, path, answer)
        assert answer["message"].startswith(f"{field}: "), (what, answer)
    for what, body_text in [("not JSON", "{"), ("a bare NaN", "NaN")]:
        r = client.post(f"{url}/heartbeat", content=body_text,
                        headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body", (what, r.text)
    # Parameters and claims.
    for path, field in [("/api/v1/trials/0/heartbeat", "trial_id"),
                        ("/api/v1/trials/2147483648/heartbeat", "trial_id"),
                        ("/api/v1/trials/abc/heartbeat", "trial_id")]:  # fmt: skip
        r = client.post(path, json={"worker": "w1"})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.text
    claims: list[tuple[dict[str, Any], str]] = [({"worker": "w1", "devices": 0}, "devices"),
                                                ({"worker": "w1", "wait_s": 21}, "wait_s"),
                                                ({"worker": "w 1"}, "worker"),
                                                ({"worker": "x" * 129}, "worker")]  # fmt: skip
    for asked, field in claims:
        r = client.post("/api/v1/trials/claim", json=asked)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.text
    # A body over the server's limit (ADVISOR_MAX_BODY_BYTES), refused before it is read.
    limit = client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    many = [epoch(i, metrics={"accuracy": 0.5, "pad": 0.123456789}) for i in range(2)]
    big = json.dumps(done("w1", many * (limit // len(json.dumps(many)) + 1)))
    assert len(big) > limit
    r = client.post(f"{url}/complete", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["message"] == f"body: request body is larger than the limit of {limit} bytes"
    # An unknown trial: 404, for every operation.
    for path, body in [("heartbeat", {"worker": "w1"}), ("complete", done("w1", whole)),
                       ("fail", {"worker": "w1", "error": "x"}),
                       ("release", {"worker": "w1"})]:  # fmt: skip
        r = client.post(f"/api/v1/trials/424242/{path}", json=body)
        assert r.status_code == 404 and r.json() == {"message": "trial 424242 not found"}, r.text
    assert stored(db_url) == before, "nothing of any refused request is stored"
    # The same worker hands in its real curve afterwards: nothing above held it back.
    assert client.post(f"{url}/heartbeat", json={"worker": "w1", "curve": whole[:1]}).is_success
    r = client.post(f"{url}/complete", json=done("w1", whole))
    assert r.status_code == 204, r.text
    row = next(t for t in stored(db_url)["trials"] if t[0] == trial["id"])
    assert row[1] == "done" and row[6] == whole
    assert row[7]["best_metric"] == 0.6 and row[7]["n_train"] == 1438
