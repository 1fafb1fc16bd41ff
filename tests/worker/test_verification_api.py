"""Verifications end to end through the API, on the embedded default: report a reproducible run,
verify a rung, watch it succeed, read the figures, the verdict and the child runs."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.models import JobStatus
from app.schemas import VerificationOut
from tests.conftest import make_client, overfit_epochs

RECIPE = {
    "arch": "simple_cnn_small", "head": {"ps": 0.0, "lin_ftrs": [32]}, "epochs": 3,
    "batch_size": 64, "lr": 3e-3, "data": {"kind": "digits", "image_size": 16},
}  # fmt: skip
PARAMS = {"lr": 0.003, "sched": "one_cycle", "fp16": False}
TAGS = ["digits", "smoke"]


@pytest.fixture
def worker_client(db_url: str) -> Iterator[TestClient]:
    with make_client(db_url, worker="embedded", worker_poll_s=0.1, worker_lease_s=20) as c:
        yield c


def report(client: TestClient, recipe: dict[str, Any] | None = RECIPE) -> dict[str, Any]:
    r = client.post("/api/v1/runs", json={"name": "digits", "recipe": recipe,
                                          "epochs": overfit_epochs(), "params": PARAMS,
                                          "tags": TAGS})  # fmt: skip
    assert r.status_code == 201, r.text
    run: dict[str, Any] = r.json()
    return run


def wait(client: TestClient, job_id: int, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/v1/verifications/{job_id}").json()
        assert job["finished"] == JobStatus(job["status"]).finished, job
        if job["finished"]:
            return job
        time.sleep(0.2)
    pytest.fail(f"verification {job_id} did not finish: {job}")


def test_verify_a_rung_end_to_end_and_reuse_the_baseline(worker_client: TestClient) -> None:
    client = worker_client
    run = report(client)
    r = client.post(f"/api/v1/runs/{run['id']}/verifications",
                    json={"rung": "dropout_head", "seeds": 2})  # fmt: skip
    assert r.status_code == 202, r.text
    queued = r.json()
    VerificationOut.model_validate(queued)
    assert not queued["finished"] and not JobStatus(queued["status"]).finished
    assert queued["candidate_recipe"]["head"]["ps"] == 0.25

    job = wait(client, queued["id"])
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert job["verdict"] in ("confirmed", "refuted", "inconclusive")
    assert job["verdict"] == result["verdict"]
    assert len(result["per_seed"]) == 4
    assert {(s["role"], s["seed"]) for s in result["per_seed"]} == {
        ("baseline", 0),
        ("candidate", 0),
        ("baseline", 1),
        ("candidate", 1),
    }
    for figures in result["per_seed"]:
        assert 0 <= figures["final_metric"] <= 1
        assert figures["final_metric"] <= figures["best_metric"]
    # Judged on the best epoch by default; the final epoch's comparison is reported beside it.
    assert result["criterion"] == "best"
    for criterion in ("best", "final"):
        base = [s[f"{criterion}_metric"] for s in result["per_seed"] if s["role"] == "baseline"]
        cand = [s[f"{criterion}_metric"] for s in result["per_seed"] if s["role"] == "candidate"]
        diffs = [c - b for b, c in zip(base, cand, strict=True)]
        assert result["comparisons"][criterion]["differences"] == pytest.approx(diffs)
    assert result["differences"] == result["comparisons"]["best"]["differences"]
    assert result["interval"][0] <= result["effect"] <= result["interval"][1]
    assert result["trials_trained"] == 4 and result["trials_reused"] == 0
    assert result["seeds_used"] == 2 and result["stopped"] in ("settled", "max_seeds")
    assert job["progress"]["epochs_done"] == job["progress"]["epochs_total"] == 12

    # The candidate's trainings are child runs of the verified run.
    children = result["child_runs"]
    assert len(children) == 2
    lineage = client.get(f"/api/v1/runs/{run['id']}/lineage").json()
    assert sorted(d["id"] for d in lineage["descendants"]) == sorted(children)
    child = client.get(f"/api/v1/runs/{children[0]}").json()
    assert child["source"] == "verification"
    assert child["applied_rung"] == "dropout_head"
    assert child["recipe"]["head"]["ps"] == 0.25
    assert child["n_epochs"] == 3
    # Child runs carry the parent's hyperparameters and tags.
    assert child["params"] == PARAMS and child["tags"] == TAGS

    # Another rung on the same run: the baselines are reused, not retrained.
    again = client.post(f"/api/v1/runs/{run['id']}/verifications",
                        json={"rung": "augment", "seeds": 2}).json()  # fmt: skip
    second = wait(client, again["id"])
    assert second["status"] == "succeeded", second
    assert second["result"]["trials_reused"] == 2
    assert second["result"]["trials_trained"] == 2
    reused = [s for s in second["result"]["per_seed"] if s["reused"]]
    assert {s["role"] for s in reused} == {"baseline"}
    listed = client.get("/api/v1/verifications", params={"run_id": run["id"]}).json()
    assert [v["id"] for v in listed] == [again["id"], queued["id"]]


def test_requests_that_cannot_be_verified(client: TestClient) -> None:
    no_recipe = client.post("/api/v1/runs", json={"epochs": overfit_epochs()}).json()
    r = client.post(f"/api/v1/runs/{no_recipe['id']}/verifications", json={})
    assert r.status_code == 409
    # It says what to do: declare knobs and start an agent, or report a recipe.
    message = r.json()["message"]
    assert "trial(defaults, knobs=" in message and "overfit-advisor agent" in message
    assert "Verify on your own code" in message and "recipe" in message
    run = report(client)
    r = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"rung": "smaller_model"})
    assert r.status_code == 409
    assert "smallest of its family" in r.json()["message"]
    r = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"seeds": [1, 1]})
    assert r.status_code == 422
    assert "seeds" in r.json()["message"]
    r = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"device": "tpu"})
    assert r.status_code == 422
    assert client.post("/api/v1/runs/424242/verifications", json={}).status_code == 404
    assert client.get("/api/v1/verifications/424242").status_code == 404
    assert client.get("/api/v1/verifications").json() == []


def test_cancel_a_queued_verification(client: TestClient) -> None:
    run = report(client)
    job = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"rung": "augment"}).json()
    r = client.post(f"/api/v1/verifications/{job['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    again = client.post(f"/api/v1/verifications/{job['id']}/cancel")
    assert again.status_code == 409


def test_more_data_with_nothing_on_disk_measures_a_learning_curve(
    worker_client: TestClient,
) -> None:
    run = report(worker_client)
    assert run["recommendation"]["rung"] == "more_data"
    queued = worker_client.post(f"/api/v1/runs/{run['id']}/verifications",
                                json={"seeds": 2, "epochs": 2}).json()  # fmt: skip
    assert queued["rung"] == "more_data" and queued["candidate_recipe"] is None
    job = wait(worker_client, queued["id"])
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert set(result["fractions"]) == {"0.25", "0.5", "1.0"}
    assert all(len(v) == 2 for v in result["fractions"].values())
    assert [s["n_train"] for s in result["per_seed"][:3]] == [360, 719, 1438]
    assert result["effect"] == pytest.approx(
        result["predicted_metric_with_2x_data"] - result["metric_now"]
    )
    assert result["verdict"] in ("confirmed", "refuted", "inconclusive")
    assert result["child_runs"] == []


def test_the_api_and_an_idle_embedded_worker_do_not_import_torch(tmp_path: Any) -> None:
    """torch loads with the first job: reports, pages, queuing and an idle worker stay light."""
    import subprocess
    import sys

    code = f"""
import sys, time
from fastapi.testclient import TestClient
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
url = "sqlite:///{tmp_path / "light.db"}"
upgrade(url)
with TestClient(create_app(Settings(database_url=url, worker="embedded", worker_poll_s=0.05))) as c:
    time.sleep(0.5)
    run = c.post("/api/v1/runs", json={{"recipe": {RECIPE!r}, "epochs": []}}).json()
    assert c.get("/runs/%d" % run["id"]).status_code == 200
with TestClient(create_app(Settings(database_url=url, worker="off"))) as c:
    queued = c.post("/api/v1/runs/%d/verifications" % run["id"], json={{"rung": "augment"}})
    assert queued.status_code == 202
    assert c.get("/verifications/%d" % queued.json()["id"]).status_code == 200
print(sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
