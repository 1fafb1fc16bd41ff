"""Runs from users' own scripts, verified through their knobs (issue 19), at the HTTP level on
both backends: what a run with a trainer answers, which rungs it can verify and what the others
need, the script trials an agent claims (and a builder worker never does), their hand-in, the
result and its child runs; and recipes that contradict their report. The agent itself, as a
real process: tests/client/test_agent.py and tests/client/test_agent_scripts.py."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_client, overfit_epochs
from tests.worker.test_verification_api import report

SETTINGS = {"lr": 0.001, "epochs": 4, "arch": "wide", "augment": "none", "head_dropout": 0.0}


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with make_client(db_url, worker_lease_s=60.0) as c:
        yield c


def with_accuracy(epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epochs with an accuracy that peaks where the validation loss is lowest."""
    return [{**e, "metrics": {"accuracy": 0.9 - 0.005 * abs(e["epoch"] - 6)}} for e in epochs]


def script_run(
    client: TestClient, data: dict[str, Any] | None = None, **trainer: Any
) -> dict[str, Any]:
    body = {
        "name": "my script",
        "metric": {"name": "accuracy"},
        "epochs": with_accuracy(overfit_epochs()),
        "data": {"more_data_available": False} if data is None else data,
        "trainer": {"settings": SETTINGS, "knobs": ["augment", "head_dropout"], **trainer},
    }
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    run: dict[str, Any] = r.json()
    return run


def claim(client: TestClient, worker: str, **body: Any) -> dict[str, Any] | None:
    r = client.post("/api/v1/trials/claim", json={"worker": worker, **body})
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else None


def curve(accuracy: float, n: int = 4) -> list[dict[str, Any]]:
    return [
        {"epoch": i, "train_loss": None if i == 0 else 1.0 / (i + 1), "valid_loss": 1.0 - accuracy,
         "metrics": {"accuracy": accuracy - 0.01 * (n - 1 - i)}}
        for i in range(n)
    ]  # fmt: skip


def test_a_script_run_says_which_rungs_its_knobs_verify(client: TestClient) -> None:
    run = script_run(client)
    assert run["trainer"]["knobs"] == ["augment", "head_dropout"]
    rec = run["recommendation"]
    assert rec["rung"] == "augment" and rec["verifiable"] is True and rec["verify_hint"] is None
    steps = {s["rung"]: s for s in rec["ladder"]}
    assert steps["dropout_head"]["verifiable"] is True
    # Mixup has no knob: the step says which knob would make it verifiable, and where to read.
    assert steps["mixup"]["verifiable"] is False
    assert "'mixup' knob" in steps["mixup"]["verify_hint"]
    assert "Verify on your own code" in steps["mixup"]["verify_hint"]
    r = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"rung": "mixup"})
    assert r.status_code == 409
    assert "'mixup' knob" in r.json()["message"] and "README" in r.json()["message"]


def test_an_agent_trains_the_script_trials_and_the_verdict_is_stored(client: TestClient) -> None:
    run = script_run(client)
    r = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"seeds": [3], "epochs": 4})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["rung"] == "augment" and job["epochs"] == 4
    # The model builder's worker never takes a script's trial.
    assert claim(client, "builder-1") is None
    assert claim(client, "agent-1", runner="script", project="elsewhere") is None
    accuracy = {"baseline": 0.80, "candidate": 0.86}
    seen = []
    while (trial := claim(client, "agent-1", runner="script")) is not None:
        seen.append(trial)
        assert trial["runner"] == "script" and trial["run_name"] == "my script"
        assert trial["metric"] == "accuracy" and trial["seed"] == 3 and trial["epochs"] == 4
        done = {"worker": "agent-1", "curve": curve(accuracy[trial["role"]]), "duration_s": 2.0,
                "device": "cpu"}  # fmt: skip
        r = client.post(f"/api/v1/trials/{trial['id']}/complete", json=done)
        assert r.status_code == 204, r.text
    by_role = {t["role"]: t for t in seen}
    assert by_role["baseline"]["change"] == {}
    assert by_role["baseline"]["settings"] == SETTINGS
    assert by_role["candidate"]["change"] == {"augment": "basic"}
    assert by_role["candidate"]["settings"] == {**SETTINGS, "augment": "basic"}
    finished = client.get(f"/api/v1/verifications/{job['id']}").json()
    assert finished["status"] == "succeeded", finished
    assert finished["result"]["metric"] == "accuracy"
    assert finished["result"]["effect"] == pytest.approx(0.06)
    (child_id,) = finished["result"]["child_runs"]
    child = client.get(f"/api/v1/runs/{child_id}").json()
    assert child["recipe"] is None and child["parent_id"] == run["id"]
    assert child["trainer"]["settings"]["augment"] == "basic"
    assert child["trainer"]["knobs"] == ["augment", "head_dropout"]
    trials = client.get(f"/api/v1/verifications/{job['id']}/trials").json()
    assert {t["status"] for t in trials} == {"done"} and len(trials) == 2


def test_a_run_judged_by_its_loss_compares_losses_the_right_way_round(client: TestClient) -> None:
    body = {"epochs": overfit_epochs(), "data": {"more_data_available": False},
            "trainer": {"settings": {"augment": "none"}, "knobs": ["augment"]}}  # fmt: skip
    run = client.post("/api/v1/runs", json=body).json()
    job = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"seeds": [0]}).json()
    losses = {"baseline": 0.9, "candidate": 0.7}
    while (trial := claim(client, "agent", runner="script")) is not None:
        assert trial["metric"] == "valid_loss"
        records = [{"epoch": i, "train_loss": 0.5, "valid_loss": losses[trial["role"]] + 0.01 * i}
                   for i in range(3)]  # fmt: skip
        done = {"worker": "agent", "curve": records, "duration_s": 1.0, "device": "cpu"}
        assert client.post(f"/api/v1/trials/{trial['id']}/complete", json=done).status_code == 204
    result = client.get(f"/api/v1/verifications/{job['id']}").json()["result"]
    # Lower is better: the candidate's 0.2 lower loss is an improvement of 0.2.
    assert result["metric"] == "valid_loss" and result["effect"] == pytest.approx(0.2)
    assert result["per_seed"][0]["best_metric"] == pytest.approx(0.9)


def test_more_data_with_a_data_fraction_knob_is_a_learning_curve(client: TestClient) -> None:
    run = script_run(client, data={}, knobs=["data_fraction"])
    # Nothing said of more data: it comes first, and the knob makes it a learning curve.
    assert run["recommendation"]["rung"] == "more_data"
    assert run["recommendation"]["verifiable"] is True
    r = client.post(f"/api/v1/runs/{run['id']}/verifications", json={"seeds": [0]})
    assert r.status_code == 202, r.text
    fractions = []
    while (trial := claim(client, "agent", runner="script")) is not None:
        fraction = trial["settings"].get("data_fraction")
        fractions.append(fraction)
        done = {"worker": "agent", "curve": curve(0.5 + 0.3 * fraction), "duration_s": 1.0,
                "device": "cpu"}  # fmt: skip
        assert client.post(f"/api/v1/trials/{trial['id']}/complete", json=done).status_code == 204
    assert sorted(fractions) == [0.25, 0.5, 1.0]
    result = client.get(f"/api/v1/verifications/{r.json()['id']}").json()["result"]
    assert result["verdict"] == "confirmed" and result["slope"] < 0


@pytest.mark.parametrize(
    ("trainer", "field"),
    [
        ({"knobs": ["learning_rate"]}, "trainer.knobs"),
        ({"knobs": ["augment", "augment"]}, "knobs"),
        ({"knobs": ["smaller_model"]}, "models"),
        ({"knobs": ["smaller_model"], "models": ["big", "small"]}, "settings.arch"),
        ({"settings": {"x": {"nested": 1}}}, "trainer.settings"),
    ],
)
def test_a_trainer_that_cannot_work_is_refused(
    client: TestClient, trainer: dict[str, Any], field: str
) -> None:
    r = client.post("/api/v1/runs", json={"epochs": overfit_epochs(), "trainer": trainer})
    assert r.status_code == 422
    assert field in r.text
    assert client.get("/api/v1/runs").json()["items"] == []


def test_a_recipe_that_contradicts_its_report_is_refused(client: TestClient) -> None:
    recipe = report(client)["recipe"]  # simple_cnn on digits, stored
    before = len(client.get("/api/v1/runs").json()["items"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": {"arch": "resnet50"}}, "recipe.arch"),
        ({"task": "segmentation"}, "recipe.task"),
        ({"data": {"n_train": 200}}, "recipe.data"),
    ]
    for change, field in cases:
        body = {"epochs": overfit_epochs(), "recipe": recipe, **change}
        r = client.post("/api/v1/runs", json=body)
        assert r.status_code == 422, (change, r.text)
        assert r.json()["field"] == field, r.json()
    assert len(client.get("/api/v1/runs").json()["items"]) == before
    agreeing = {"model": {"arch": recipe["arch"]}, "task": recipe["task"]}
    r = client.post("/api/v1/runs", json={"epochs": overfit_epochs(), "recipe": recipe, **agreeing})
    assert r.status_code == 201, r.text
