"""GET /api/v1/verifications/{id}/trials on SQLite and PostgreSQL: the trials a verification
queued and those it reused, who trained each and where, and their curves growing while they run.
The trainings are handed in through the worker API as a worker does (the curves made up here, so
the test is quick and its numbers exact); tests/web/test_browser.py trains real ones."""

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient

from app.schemas import TrialOut
from tests.api.test_auth import tokens
from tests.conftest import make_client, overfit_epochs
from tests.worker.test_verification_api import RECIPE, report

EPOCHS = 3
assert RECIPE["epochs"] == EPOCHS


def curve(seed: int, role: str, n: int = EPOCHS) -> list[dict[str, Any]]:
    """An epoch-by-epoch curve; candidates a little better, so the verdict is clear."""
    lift = 0.02 if role == "candidate" else 0.0
    return [
        {"epoch": i, "train_loss": 1.0 / (i + 1), "valid_loss": 0.5 + 0.01 * i,
         "metrics": {"accuracy": 0.5 + 0.1 * i + lift + 0.001 * seed}}
        for i in range(n)
    ]  # fmt: skip


def listed(client: TestClient, job_id: int) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/verifications/{job_id}/trials")
    assert r.status_code == 200, r.text
    trials: list[dict[str, Any]] = r.json()
    for t in trials:
        TrialOut.model_validate(t)
    return trials


def claim(client: TestClient, worker: str) -> dict[str, Any]:
    r = client.post("/api/v1/trials/claim", json={"worker": worker})
    assert r.status_code == 200, r.text
    claimed: dict[str, Any] = r.json()
    return claimed


def hand_in(client: TestClient, trial: dict[str, Any], worker: str) -> None:
    body = {"worker": worker, "curve": curve(trial["seed"], trial["role"]), "n_train": 1000,
            "n_classes": 10, "duration_s": 1.5, "device": "cpu"}  # fmt: skip
    r = client.post(f"/api/v1/trials/{trial['id']}/complete", json=body)
    assert r.status_code == 204, r.text


def test_a_verification_lists_its_trials_live_and_those_it_reused(db_url: str) -> None:
    with make_client(db_url) as client:
        run = report(client)
        first = client.post(f"/api/v1/runs/{run['id']}/verifications",
                            json={"rung": "dropout_head", "seeds": 2}).json()  # fmt: skip
        queued = listed(client, first["id"])
        # In the order queued: pair by pair.
        assert [(t["role"], t["seed"]) for t in queued] == [
            ("baseline", 0), ("candidate", 0), ("baseline", 1), ("candidate", 1)
        ]  # fmt: skip
        for t in queued:
            assert t["status"] == "queued" and t["verification_id"] == first["id"]
            assert not t["reused"] and t["worker"] is None and t["device"] is None
            assert t["started_at"] is None and t["finished_at"] is None
            assert (t["epochs"], t["epochs_done"], t["curve"]) == (EPOCHS, 0, [])

        # A worker takes the oldest; each heartbeat's epochs show at once (live progress).
        trial = claim(client, "gpu-box-1")
        running = next(t for t in listed(client, first["id"]) if t["id"] == trial["id"])
        assert running["status"] == "running" and running["worker"] == "gpu-box-1"
        assert running["started_at"] is not None and running["epochs_done"] == 0
        for n in (1, 2):
            beat = {"worker": "gpu-box-1", "curve": curve(trial["seed"], trial["role"], n)}
            assert client.post(f"/api/v1/trials/{trial['id']}/heartbeat", json=beat).json() == {
                "stop": False
            }
            now = next(t for t in listed(client, first["id"]) if t["id"] == trial["id"])
            assert now["epochs_done"] == n and len(now["curve"]) == n
            assert now["device"] is None  # known once handed in
        hand_in(client, trial, "gpu-box-1")
        for i in range(3):
            hand_in(client, claim(client, f"cpu-box-{i}"), f"cpu-box-{i}")
        job = client.get(f"/api/v1/verifications/{first['id']}").json()
        assert job["status"] == "succeeded", job

        done = listed(client, first["id"])
        assert len(done) == 4
        assert {t["worker"] for t in done} == {"gpu-box-1", "cpu-box-0", "cpu-box-1", "cpu-box-2"}
        for t in done:
            assert t["status"] == "done" and t["device"] == "cpu" and t["duration_s"] == 1.5
            assert t["epochs_done"] == EPOCHS and not t["reused"]
            # As instants: a time on a whole second is written without its fraction ("...48Z"),
            # which sorts after "...48.012000Z" as text.
            started = datetime.fromisoformat(t["started_at"])
            assert started <= datetime.fromisoformat(t["finished_at"])
            assert t["figures"]["final_metric"] == t["curve"][-1]["metrics"]["accuracy"]
        by_line = {line["trial_id"] for line in job["result"]["per_seed"]}
        assert by_line == {t["id"] for t in done}

        # Another rung on the same run: its baselines are the first one's, reused from the start
        # (before the verification has a result), beside its own queued candidates.
        second = client.post(f"/api/v1/runs/{run['id']}/verifications",
                             json={"rung": "augment", "seeds": 2}).json()  # fmt: skip
        shared = listed(client, second["id"])
        reused = [t for t in shared if t["reused"]]
        assert {t["id"] for t in reused} == {t["id"] for t in done if t["role"] == "baseline"}
        assert all(t["verification_id"] == first["id"] and t["status"] == "done" for t in reused)
        own = [t for t in shared if not t["reused"]]
        assert [(t["role"], t["rung"], t["status"]) for t in own] == [
            ("candidate", "augment", "queued")
        ] * 2
        for _ in own:
            hand_in(client, claim(client, "cpu-box-0"), "cpu-box-0")
        after = client.get(f"/api/v1/verifications/{second['id']}").json()
        assert after["status"] == "succeeded", after
        assert [t["id"] for t in listed(client, second["id"])] == [t["id"] for t in shared]
        # The first verification's list is its own still.
        assert [t["id"] for t in listed(client, first["id"])] == [t["id"] for t in done]


def test_cancelled_trials_stay_listed_without_a_worker(db_url: str) -> None:
    with make_client(db_url) as client:
        run = report(client)
        job = client.post(f"/api/v1/runs/{run['id']}/verifications",
                          json={"rung": "augment", "seeds": 2}).json()  # fmt: skip
        trial = claim(client, "w")
        assert client.post(f"/api/v1/verifications/{job['id']}/cancel").status_code == 200
        trials = listed(client, job["id"])
        assert len(trials) == 4
        states = {t["id"]: (t["status"], t["stop_requested"]) for t in trials}
        # The running one is told to stop at its next heartbeat; the queued ones are dropped.
        assert states.pop(trial["id"]) == ("running", True)
        assert set(states.values()) == {("cancelled", False)}


def test_another_projects_verification_answers_as_a_missing_one(db_url: str) -> None:
    alice, bob = tokens(db_url, "alice", "bob")
    a = {"Authorization": f"Bearer {alice}"}
    b = {"Authorization": f"Bearer {bob}"}
    with make_client(db_url, auth="required") as client:
        body = {"name": "a", "recipe": RECIPE, "epochs": overfit_epochs()}
        run = client.post("/api/v1/runs", json=body, headers=a).json()
        job = client.post(f"/api/v1/runs/{run['id']}/verifications",
                          json={"rung": "augment"}, headers=a).json()  # fmt: skip
        assert len(client.get(f"/api/v1/verifications/{job['id']}/trials", headers=a).json()) == 4
        missing = 424242
        theirs = client.get(f"/api/v1/verifications/{job['id']}/trials", headers=b)
        absent = client.get(f"/api/v1/verifications/{missing}/trials", headers=b)
        assert theirs.status_code == absent.status_code == 404
        assert theirs.json() == {**absent.json(), "message": f"verification {job['id']} not found"}
        assert absent.json()["message"] == f"verification {missing} not found"
        assert client.get(f"/api/v1/verifications/{job['id']}/trials").status_code == 401
