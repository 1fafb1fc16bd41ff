"""Evidence from similar runs through the API, on SQLite and PostgreSQL: verdicts stored for
verified runs (rung_verdicts) reach the ladder of a new overfitting run that is similar to them
(same task and architecture family, training set within a factor of 4), in its project only
unless ADVISOR_SHARED_EVIDENCE is on."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import Database
from app.models import JobStatus, Run, RungVerdict, Verification
from app.services.projects import create_project
from tests.api.test_runs import post
from tests.conftest import healthy_epochs, make_client, overfit_epochs
from tests.worker.test_verification_api import RECIPE

NO_MORE_DATA = {"more_data_available": False}
REFUTED_AUGMENT = {"confirmed": 0, "refuted": 3, "inconclusive": 0, "similar_runs": 3}


def judge(url: str, run_id: int, rung: str, *judged: tuple[str, float | None]) -> None:
    """Finished verifications of ``rung`` on ``run_id``, one per (verdict, effect), each with the
    rung verdict the worker stores for it."""
    db = Database(url)
    with db.session() as session:
        project_id = session.scalar(select(Run.project_id).where(Run.id == run_id))
        assert project_id is not None
        for verdict, effect in judged:
            job = Verification(
                run_id=run_id, rung=rung, status=JobStatus.SUCCEEDED, verdict=verdict, effect=effect
            )
            session.add(job)
            session.flush()
            session.add(
                RungVerdict(
                    verification_id=job.id,
                    run_id=run_id,
                    project_id=project_id,
                    rung=rung,
                    verdict=verdict,
                    effect=effect,
                )
            )
    db.dispose()


def reported(arch: str, n_train: int | None, **body: Any) -> dict[str, Any]:
    data: dict[str, Any] = {**NO_MORE_DATA}
    if n_train is not None:
        data["n_train"] = n_train
    return {"model": {"arch": arch}, "data": data, **body}


def steps(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["rung"]: s for s in run["recommendation"]["ladder"]}


def test_similar_runs_refuting_a_rung_demote_it(client: TestClient, db_url: str) -> None:
    url = db_url
    # Similar: resnet family, classification, 1000..4000 training images around 2000.
    a = post(client, name="a", **reported("resnet18", 1000))
    b = post(client, name="b", **reported("resnet50", 3000))
    recipe = {**RECIPE, "arch": "resnet18"}  # digits at valid_pct 0.2: 1438 training images
    c = post(client, name="c", recipe=recipe, data=NO_MORE_DATA)
    # Not similar: another family, a training set over 4x larger, another task.
    d = post(client, name="d", **reported("vgg16", 2000))
    e = post(client, name="e", **reported("resnet34", 8001))
    f = post(client, name="f", task="segmentation", **reported("resnet34", 2000))
    judge(url, a["id"], "augment", ("refuted", -0.01))
    judge(url, b["id"], "augment", ("refuted", -0.03))
    judge(url, c["id"], "augment", ("refuted", -0.02))
    judge(url, a["id"], "mixup", ("inconclusive", 0.001), ("confirmed", 0.02))
    for other in (d, e, f):
        judge(url, other["id"], "augment", ("confirmed", 0.05))

    run = post(client, name="new", **reported("resnet34", 2000))
    rec = run["recommendation"]
    assert rec["rung"] == "mixup"
    assert [s["rung"] for s in rec["ladder"]][:3] == ["more_data", "mixup", "augment"]
    augment = steps(run)["augment"]
    assert augment["status"] == "demoted"
    assert augment["reason"].startswith("Tried after mixup: refuted in 3 of 3 verifications")
    assert augment["evidence"] == {**REFUTED_AUGMENT, "median_effect": pytest.approx(-0.02)}
    assert [a["rung"] for a in rec["alternatives"]] == ["augment"]
    mixup = {"confirmed": 1, "refuted": 0, "inconclusive": 1, "similar_runs": 1}
    assert rec["evidence"] == {**mixup, "median_effect": pytest.approx(0.0105)}
    assert steps(run)["mixup"]["evidence"] == rec["evidence"]
    assert steps(run)["batchnorm"]["evidence"] is None
    assert client.get(f"/api/v1/runs/{run['id']}").json() == run

    # The same report with epochs appended later gets the same ladder.
    growing = post(
        client, name="growing", epochs=overfit_epochs()[:3], **reported("resnet34", 2000)
    )
    assert growing["recommendation"]["ladder"] == []
    appended = client.post(
        f"/api/v1/runs/{growing['id']}/epochs", json={"epochs": overfit_epochs()[3:]}
    ).json()
    assert appended["recommendation"]["ladder"] == rec["ladder"]

    # A run whose size or family is unknown is similar to nothing; a healthy run walks nothing.
    for body in (reported("resnet34", None), {"data": {**NO_MORE_DATA, "n_train": 2000}}):
        blind = post(client, **body)
        assert blind["recommendation"]["rung"] == "augment"
        assert all(s["evidence"] is None for s in blind["recommendation"]["ladder"])
    fine = post(client, epochs=healthy_epochs(), **reported("resnet34", 2000))
    assert fine["recommendation"]["evidence"] is None and fine["recommendation"]["ladder"] == []


def test_a_lineage_refutation_skips_while_an_inconclusive_verdict_keeps_the_rung(
    client: TestClient, db_url: str
) -> None:
    parent = post(client, **reported("resnet34", 2000))
    assert parent["recommendation"]["rung"] == "augment"
    judge(db_url, parent["id"], "augment", ("inconclusive", 0.004))
    child = post(client, parent_id=parent["id"], applied_rung="mixup", **reported("resnet34", 2000))
    assert child["recommendation"]["rung"] == "augment"
    assert "inconclusive" in steps(child)["augment"]["reason"]
    judge(db_url, parent["id"], "augment", ("refuted", -0.01))
    later = post(client, parent_id=parent["id"], applied_rung="mixup", **reported("resnet34", 2000))
    assert steps(later)["augment"]["status"] == "skipped"
    assert "refuted" in steps(later)["augment"]["reason"]


def test_evidence_stays_in_its_project_unless_shared(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as session:
        alice, bob = (create_project(session, name)[1] for name in ("alice", "bob"))
    db.dispose()
    a = {"Authorization": f"Bearer {alice}"}
    b = {"Authorization": f"Bearer {bob}"}
    with make_client(db_url, auth="required") as client:
        for size in (1000, 2000, 3000):
            r = client.post(
                "/api/v1/runs", json=reported("resnet50", size, epochs=overfit_epochs()), headers=a
            )
            assert r.status_code == 201, r.text
            judge(db_url, r.json()["id"], "augment", ("refuted", -0.02))
        body = reported("resnet34", 2000, epochs=overfit_epochs())
        own = client.post("/api/v1/runs", json=body, headers=a).json()
        assert own["recommendation"]["rung"] == "mixup"
        assert steps(own)["augment"]["evidence"]["refuted"] == 3
        other = client.post("/api/v1/runs", json=body, headers=b).json()
        assert other["recommendation"]["rung"] == "augment"
        assert steps(other)["augment"]["evidence"] is None
    with make_client(db_url, auth="required", shared_evidence=True) as client:
        shared = client.post("/api/v1/runs", json=body, headers=b).json()
        assert shared["recommendation"]["rung"] == "mixup"
        assert steps(shared)["augment"]["status"] == "demoted"
        assert steps(shared)["augment"]["evidence"]["refuted"] == 3
