"""The runs API on SQLite and PostgreSQL: reports in, diagnosis and recommendation out, history."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import Database
from app.schemas import EpochIn, Lineage, RunOut, RunPage
from app.services.errors import Conflict
from app.services.runs import append_epochs, get_run
from tests.conftest import (
    RUNG_ORDER,
    UDACITY_MNIST,
    epochs_from,
    healthy_epochs,
    make_client,
    overfit_epochs,
    service_run,
)


def post(client: TestClient, **body: Any) -> dict[str, Any]:
    body.setdefault("epochs", overfit_epochs())
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    run: dict[str, Any] = r.json()
    return run


def test_report_gets_diagnosis_and_next_rung(client: TestClient) -> None:
    run = post(
        client,
        name="resnet34-pets",
        model={"arch": "resnet34", "batchnorm": True, "head_dropout": 0.0},
        data={
            "n_train": 5912,
            "augment": "none",
            "more_data_available": False,
            "data_fraction": 1.0,
        },
    )
    assert run["project"] == "default"
    assert run["verdict"] == "overfitting"
    diagnosis = run["diagnosis"]
    assert diagnosis["verdict"] == "overfitting"
    assert diagnosis["best_epoch"] == 6
    evidence = diagnosis["evidence"]
    assert evidence["criterion"] == "valid_loss"
    assert evidence["valid_loss_degradation"] > 0.5
    assert evidence["train_loss_trend"] == "improving"
    rec = run["recommendation"]
    assert rec["rung"] == "augment"
    assert rec["change"] == {"augment": "basic"}
    assert rec["skipped"] == [
        {
            "rung": "more_data",
            "reason": "the report says no more data is available and all of it is already used",
        }
    ]
    assert rec["alternatives"][0]["rung"] == "mixup"
    assert [s["rung"] for s in rec["ladder"]] == RUNG_ORDER

    fetched = client.get(f"/api/v1/runs/{run['id']}").json()
    assert fetched == run


def test_healthy_run_gets_no_remedy(client: TestClient) -> None:
    run = post(client, epochs=healthy_epochs())
    assert run["verdict"] == "healthy"
    assert run["recommendation"]["rung"] is None
    assert "not overfitting" in run["recommendation"]["action"]


def test_appending_epochs_recomputes_the_diagnosis(client: TestClient) -> None:
    epochs = overfit_epochs(20)
    run = post(client, epochs=epochs[:3])
    assert run["verdict"] == "insufficient_data"
    r = client.post(f"/api/v1/runs/{run['id']}/epochs", json={"epochs": epochs[3:]})
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == "overfitting"
    assert r.json()["n_epochs"] == 20
    stored = client.get(f"/api/v1/runs/{run['id']}").json()
    assert [e["epoch"] for e in stored["epochs"]] == list(range(20))
    assert stored["recommendation"]["rung"] == "more_data"


def test_appending_an_epoch_already_stored_is_refused(client: TestClient) -> None:
    run = post(client)
    r = client.post(f"/api/v1/runs/{run['id']}/epochs", json={"epochs": overfit_epochs(20)[-1:]})
    assert r.status_code == 422
    assert "epochs[0].epoch" in r.json()["message"]
    assert "duplicated" in r.json()["message"]
    assert client.get(f"/api/v1/runs/{run['id']}").json()["n_epochs"] == 20


def step_evaluations(n: int = 20) -> list[dict[str, Any]]:
    """:func:`overfit_epochs` evaluated every 40 steps of 100-step epochs: fractional epochs,
    steps and a learning rate decaying with them."""
    return [
        {**e, "epoch": 0.4 * (i + 1), "step": 40 * (i + 1), "lr": 1e-3 * 0.9**i}
        for i, e in enumerate(overfit_epochs(n))
    ]


def test_evaluations_by_steps_keep_their_steps_fractional_epochs_and_learning_rates(
    client: TestClient,
) -> None:
    """A run evaluated every 40 steps is stored and answered as reported (integers stay
    integers); the diagnosis names its fractional stop epoch; an append must follow the stored
    steps as well as the stored epochs."""
    evaluations = step_evaluations()
    run = post(client, epochs=evaluations[:12])
    r = client.post(f"/api/v1/runs/{run['id']}/epochs", json={"epochs": evaluations[12:]})
    assert r.status_code == 200, r.text
    stored = client.get(f"/api/v1/runs/{run['id']}").json()
    assert [(e["epoch"], e["step"], e["lr"]) for e in stored["epochs"]] == [
        (e["epoch"], e["step"], e["lr"]) for e in evaluations
    ]
    assert all(type(e["step"]) is int for e in stored["epochs"])
    assert stored["verdict"] == "overfitting"
    assert stored["diagnosis"]["stop_epoch"] in {e["epoch"] for e in evaluations}
    late = {"epoch": 100, "step": 790, "train_loss": 0.1, "valid_loss": 1.0}
    r = client.post(f"/api/v1/runs/{run['id']}/epochs", json={"epochs": [late]})
    assert r.status_code == 422
    assert "epochs[0].step" in r.json()["message"] and "out of order" in r.json()["message"]
    plain = post(client)  # integers stay integers, with no step or learning rate
    assert [e["epoch"] for e in plain["epochs"]] == list(range(20))
    assert all(type(e["epoch"]) is int for e in plain["epochs"])


def test_an_evaluation_without_a_training_loss_is_stored_as_null(client: TestClient) -> None:
    """An evaluation with no training loss logged since the previous one is reported with a
    null training loss, stored as such, and the run is still diagnosed."""
    evaluations = step_evaluations()
    evaluations[5]["train_loss"] = None
    run = post(client, epochs=evaluations)
    assert run["epochs"][5]["train_loss"] is None
    assert run["verdict"] == "overfitting"


def test_child_run_skips_the_rung_its_parent_applied(client: TestClient) -> None:
    facts = {
        "model": {"arch": "resnet34", "batchnorm": True},
        "data": {"more_data_available": False, "augment": "none"},
    }
    parent = post(client, name="base", **facts)
    assert parent["rung"] == "augment"
    child = post(client, name="child", parent_id=parent["id"], **facts)
    # The child says nothing about augmentation, but its lineage applied it.
    assert child["applied_rung"] == "augment"
    assert child["rung"] == "mixup"
    skipped = {s["rung"]: s["reason"] for s in child["recommendation"]["skipped"]}
    assert skipped["augment"] == "already applied in this run's lineage"
    grandchild = post(client, name="grandchild", parent_id=child["id"], **facts)
    assert grandchild["applied_rung"] == "mixup"
    assert grandchild["rung"] == "dropout_head"  # resnet34 has batch norm: skipped

    lineage = client.get(f"/api/v1/runs/{child['id']}/lineage").json()
    assert [r["id"] for r in lineage["ancestors"]] == [parent["id"]]
    assert [r["id"] for r in lineage["descendants"]] == [grandchild["id"]]
    top = client.get(f"/api/v1/runs/{parent['id']}/lineage").json()
    assert [r["id"] for r in top["descendants"]] == [child["id"], grandchild["id"]]
    bottom = client.get(f"/api/v1/runs/{grandchild['id']}/lineage").json()
    assert [r["id"] for r in bottom["ancestors"]] == [child["id"], parent["id"]]


def test_list_filters_and_cursor_pagination(client: TestClient) -> None:
    ids = []
    for i in range(7):
        epochs = overfit_epochs() if i % 2 == 0 else healthy_epochs()
        ids.append(post(client, name=f"exp-{i}-{'Big' if i < 3 else 'small'}", epochs=epochs)["id"])

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/runs", params=params).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)

    over = client.get("/api/v1/runs", params={"verdict": "overfitting"}).json()["items"]
    assert sorted(r["id"] for r in over) == ids[0::2]
    by_rung = client.get("/api/v1/runs", params={"rung": "more_data"}).json()["items"]
    assert sorted(r["id"] for r in by_rung) == ids[0::2]
    named = client.get("/api/v1/runs", params={"name": "big"}).json()["items"]
    assert sorted(r["id"] for r in named) == ids[:3]
    assert client.get("/api/v1/runs", params={"name": "%"}).json()["items"] == []
    assert len(client.get("/api/v1/runs", params={"project": "default"}).json()["items"]) == 7
    assert client.get("/api/v1/runs", params={"project": "nobody"}).json()["items"] == []

    now = datetime.now(UTC)
    after = client.get(
        "/api/v1/runs", params={"created_after": (now - timedelta(hours=1)).isoformat()}
    )
    assert len(after.json()["items"]) == 7
    before = client.get(
        "/api/v1/runs", params={"created_before": (now - timedelta(hours=1)).isoformat()}
    )
    assert before.json()["items"] == []


def test_unknown_run_answers_404(client: TestClient) -> None:
    for path in ("/api/v1/runs/999999", "/api/v1/runs/999999/lineage"):
        r = client.get(path)
        assert r.status_code == 404
        assert "999999" in r.json()["message"]
    r = client.post("/api/v1/runs/999999/epochs", json={"epochs": overfit_epochs(1)})
    assert r.status_code == 404


def test_metric_criterion_and_inferred_direction(client: TestClient) -> None:
    n = 20
    train = [1.0 * 0.8**i + 0.01 for i in range(n)]
    valid = [0.5 + 0.01 * i for i in range(n)]  # the loss rises all along...
    acc = [0.80 + 0.005 * i for i in range(n)]  # ...but accuracy keeps getting better
    run = post(client, metric={"name": "accuracy"}, epochs=epochs_from(train, valid, acc))
    assert run["metric"] == {"name": "accuracy", "higher_is_better": True}
    assert run["verdict"] == "healthy"
    assert run["diagnosis"]["evidence"]["criterion"] == "accuracy"
    assert run["diagnosis"]["evidence"]["overconfident"]


@pytest.mark.parametrize(
    ("name", "higher_is_better"),
    [
        ("sparse_categorical_accuracy", True),  # Keras
        ("binary_accuracy", True),
        ("mean_absolute_error", False),
        ("foreground_acc", True),  # fastai
        ("RocAucBinary", None),  # not known: the report must say
        ("matthews_correlation", True),  # Hugging Face evaluate
        ("rougeL", True),
        ("Balanced_Accuracy_Score", True),  # fastai's scikit-learn metrics, in any case
        ("val_accuracy", True),  # as Keras names it on the validation data
        ("eval_wer", False),  # as the Trainer does
    ],
)
def test_metrics_named_as_libraries_log_them_need_no_direction(
    client: TestClient, name: str, higher_is_better: bool | None
) -> None:
    epochs = [{**e, "metrics": {name: 0.5 + 0.01 * i}} for i, e in enumerate(overfit_epochs(6))]
    r = client.post("/api/v1/runs", json={"metric": {"name": name}, "epochs": epochs})
    if higher_is_better is None:
        assert r.status_code == 422 and "higher_is_better" in r.text, r.text
        return
    assert r.status_code == 201, r.text
    assert r.json()["metric"] == {"name": name, "higher_is_better": higher_is_better}


def test_ladder_endpoint_lists_the_seven_rungs_in_order(client: TestClient) -> None:
    rungs = client.get("/api/v1/ladder").json()
    assert [r["id"] for r in rungs] == RUNG_ORDER
    assert [r["order"] for r in rungs] == list(range(1, 8))
    assert rungs[4]["levels"] == ["p=0.25", "p=0.5"]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["revision"] == ready.json()["head"]


def test_openapi_documents_the_contract(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/runs" in spec["paths"]
    assert "RunCreate" in spec["components"]["schemas"]


def test_a_method_the_path_lacks_answers_405_listing_every_method_it_has(
    client: TestClient,
) -> None:
    # GET and POST /api/v1/runs are two routes; Starlette alone would name the first one's only.
    for method, path, allow in [
        ("DELETE", "/api/v1/runs", "GET, POST"),
        ("PUT", "/api/v1/runs/1", "GET"),
        ("GET", "/api/v1/runs/1/epochs", "POST"),
    ]:
        r = client.request(method, path)
        assert r.status_code == 405, (method, path)
        assert r.headers["allow"] == allow
        assert r.json() == {"message": "Method Not Allowed"}


def test_responses_honour_the_documented_models(client: TestClient) -> None:
    run = post(client, model={"arch": "resnet18"})
    RunOut.model_validate(run)
    RunPage.model_validate(client.get("/api/v1/runs").json())
    Lineage.model_validate(client.get(f"/api/v1/runs/{run['id']}/lineage").json())
    assert run["created_at"].endswith("Z")


def test_a_stale_append_is_refused_not_lost(db_url: str) -> None:
    """Two appends that read the same version: the second fails instead of overwriting."""
    db = Database(db_url)
    scope, run_id = service_run(db, {"epochs": overfit_epochs(6)})
    more = [EpochIn(epoch=6, train_loss=0.1, valid_loss=1.0)]
    with db.sessionmaker() as first, db.sessionmaker() as second:
        stale = get_run(second, scope, run_id)
        append_epochs(first, get_run(first, scope, run_id), more, max_epochs=100)
        first.commit()
        with pytest.raises(Conflict):
            append_epochs(second, stale, more, max_epochs=100)
    with db.sessionmaker() as session:
        assert get_run(session, scope, run_id)["n_epochs"] == 7
    db.dispose()


def test_appends_through_two_servers_lose_no_evaluation(db_url: str) -> None:
    """Each server process keeps the epochs it last appended to a run (so an append need not
    read a long run back); another server's append in between makes that copy stale, and the
    next append reads the run from the database instead of writing over what the other added."""
    epochs = overfit_epochs(12)
    with make_client(db_url) as first, make_client(db_url) as second:
        run = post(first, epochs=epochs[:8])
        path = f"/api/v1/runs/{run['id']}/epochs"

        def append(client: TestClient, i: int) -> dict[str, Any]:
            r = client.post(path, params={"tail": 1}, json={"epochs": [epochs[i]]})
            assert r.status_code == 200, r.text
            answer: dict[str, Any] = r.json()
            return answer

        append(first, 8)
        cache = first.app.state.db.epochs  # type: ignore[attr-defined]
        assert len(cache) == 1, "the committed append left its epochs with its server"
        append(second, 9)
        assert append(first, 10)["n_epochs"] == 11
        assert append(first, 11)["n_epochs"] == 12  # from the copy the last append left
        stored = second.get(f"/api/v1/runs/{run['id']}").json()
        whole = post(first, epochs=epochs)

    def values(run: dict[str, Any]) -> list[tuple[float, float, float]]:
        return [(e["epoch"], e["train_loss"], e["valid_loss"]) for e in run["epochs"]]

    assert values(stored) == values({"epochs": epochs})
    assert stored["diagnosis"]["verdict"] == whole["diagnosis"]["verdict"]


def test_the_answer_says_which_signal_decided_where_to_stop_and_where_it_began(
    client: TestClient,
) -> None:
    """Accuracy flat within its noise, the validation loss rising: overfitting by valid_loss."""
    epochs = overfit_epochs()
    for e in epochs:
        e["metrics"] = {"accuracy": 0.9 + 0.001 * (e["epoch"] % 2)}
    run = post(client, metric={"name": "accuracy"}, epochs=epochs)
    d = run["diagnosis"]
    assert (d["verdict"], d["signal"], d["stop_epoch"], d["onset_epoch"]) == (
        "overfitting", "valid_loss", 6, 8,
    )  # fmt: skip
    readings = d["evidence"]["signals"]
    assert set(readings) == {"metric", "valid_loss"}
    assert readings["valid_loss"]["degraded"] and not readings["metric"]["degraded"]
    assert readings["valid_loss"]["noise"] < readings["valid_loss"]["threshold"]
    assert "Keep the weights of epoch 6" in d["summary"]
    assert client.get(f"/api/v1/runs/{run['id']}").json()["diagnosis"] == d


def test_a_run_that_learns_nothing_is_no_signal_with_data_advice(client: TestClient) -> None:
    """Ten classes, accuracy at chance while the training loss falls to nothing."""
    n = 30
    train = [2.3 * 0.8**i + 0.01 for i in range(n)]
    valid = [2.3 + 0.1 * i for i in range(n)]
    acc = [0.1 + 0.01 * ((i * 7) % 5 - 2) for i in range(n)]
    run = post(client, metric={"name": "accuracy"}, data={"n_classes": 10},
               epochs=epochs_from(train, valid, acc))  # fmt: skip
    assert run["verdict"] == "no_signal"
    evidence = run["diagnosis"]["evidence"]
    assert (evidence["chance"], evidence["chance_source"]) == (0.1, "n_classes")
    rec = run["recommendation"]
    assert rec["rung"] is None and rec["change"] == {} and "labels" in rec["action"]
    listed = client.get("/api/v1/runs", params={"verdict": "no_signal"}).json()["items"]
    assert [r["id"] for r in listed] == [run["id"]]


PARAMS = {"lr": 0.003, "batch_size": 64, "optimizer": "adamw", "nesterov": True, "wd": 0}


def test_params_and_tags_round_trip(client: TestClient) -> None:
    run = post(client, name="tagged", params=PARAMS, tags=["pets", "baseline", "pets", "v2"])
    assert run["params"] == PARAMS
    assert isinstance(run["params"]["batch_size"], int)
    assert isinstance(run["params"]["nesterov"], bool)
    assert isinstance(run["params"]["lr"], float)
    assert run["tags"] == ["pets", "baseline", "v2"]  # duplicates dropped, order kept
    RunOut.model_validate(run)
    fetched = client.get(f"/api/v1/runs/{run['id']}").json()
    assert fetched == run
    listed = client.get("/api/v1/runs").json()["items"]
    assert listed[0]["tags"] == ["pets", "baseline", "v2"]
    RunPage.model_validate({"items": listed, "next_cursor": None})
    # Appending epochs keeps them; lineage summaries carry the tags too.
    more = client.post(
        f"/api/v1/runs/{run['id']}/epochs",
        json={"epochs": [{"epoch": 20, "train_loss": 0.01, "valid_loss": 1.9}]},
    ).json()
    assert more["params"] == PARAMS and more["tags"] == run["tags"]
    child = post(client, name="child", parent_id=run["id"], tags=["child"])
    lineage = client.get(f"/api/v1/runs/{child['id']}/lineage").json()
    Lineage.model_validate(lineage)
    assert lineage["run"]["tags"] == ["child"]
    assert lineage["ancestors"][0]["tags"] == ["pets", "baseline", "v2"]
    assert client.get(f"/api/v1/runs/{run['id']}/lineage").json()["descendants"][0]["tags"] == [
        "child"
    ]


def test_params_and_tags_default_to_empty(client: TestClient) -> None:
    run = post(client)
    assert run["params"] == {} and run["tags"] == []
    assert client.get(f"/api/v1/runs/{run['id']}").json() == run
    assert client.get("/api/v1/runs").json()["items"][0]["tags"] == []


def test_limits_of_params_and_tags_are_accepted(client: TestClient) -> None:
    params = {f"p{i:03d}": i for i in range(199)} | {"k" * 64: "v" * 500}
    tags = [f"t{i}" for i in range(49)] + ["x" * 64]
    run = post(client, params=params, tags=tags)
    fetched = client.get(f"/api/v1/runs/{run['id']}").json()
    assert fetched["params"] == params and fetched["tags"] == tags


def test_list_filters_by_tag_with_cursor_pages(client: TestClient) -> None:
    tagged = []
    for i in range(7):
        tags = ["sweep", f"n{i}"] if i % 2 == 0 else [f"n{i}"]
        run = post(client, name=f"run-{i}", tags=tags, epochs=overfit_epochs(6))
        if i % 2 == 0:
            tagged.append(run["id"])
    post(client, name="Sweep-ish", tags=["SWEEP", "sweeps"], epochs=overfit_epochs(6))

    for order, expected in (("newest", sorted(tagged, reverse=True)), ("oldest", sorted(tagged))):
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"tag": "sweep", "limit": 3, "order": order}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/api/v1/runs", params=params).json()
            assert all("sweep" in r["tags"] for r in page["items"])
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected  # exact match: neither "SWEEP" nor "sweeps"

    one = client.get("/api/v1/runs", params={"tag": "sweep", "name": "RUN-2"}).json()
    assert [r["name"] for r in one["items"]] == ["run-2"]
    assert client.get("/api/v1/runs", params={"tag": "n1", "name": "run-2"}).json()["items"] == []
    assert client.get("/api/v1/runs", params={"tag": "nothing"}).json()["items"] == []


def test_an_idempotency_key_makes_creating_a_run_safe_to_retry(client: TestClient) -> None:
    """A retry whose first answer was lost sends the same key: it gets the same run, not a
    second one; another key, or none, creates a new run."""
    body = {"name": "retried", "epochs": overfit_epochs()}
    headers = {"Idempotency-Key": "4f1c2a"}
    first = client.post("/api/v1/runs", json=body, headers=headers)
    again = client.post("/api/v1/runs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    other = client.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "9d0e"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    names = [
        r["name"] for r in client.get("/api/v1/runs", params={"name": "retried"}).json()["items"]
    ]
    assert names == ["retried", "retried"]
    bad = client.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "x" * 65})
    assert bad.status_code == 422 and "idempotency" in bad.text.lower()


def test_finishing_a_run_diagnoses_it_whole_not_as_its_last_look(client: TestClient) -> None:
    """A real Keras MNIST run (Udacity's notebook) reported one evaluation at a time: its
    validation loss rose beyond its noise only at the last evaluation, so the last look waits
    for a confirmation that will not come. Finished, the run gets the verdict, stop epoch and
    remedy of the same run reported whole."""
    curve = json.loads(UDACITY_MNIST.read_text())
    facts = {"metric": curve["metric"], "data": {"n_classes": curve["n_classes"]}}
    epochs = curve["epochs"]
    run = post(client, epochs=epochs[:1], **facts)
    for e in epochs[1:]:
        r = client.post(f"/api/v1/runs/{run['id']}/epochs", json={"epochs": [e]})
        assert r.status_code == 200, r.text
    live = r.json()
    assert live["verdict"] == "healthy"
    assert live["diagnosis"]["evidence"]["pending"] == ["valid_loss"]

    whole = post(client, epochs=epochs, **facts)
    assert whole["verdict"] == "overfitting"
    r = client.post(f"/api/v1/runs/{run['id']}/finish")
    assert r.status_code == 200, r.text
    finished = r.json()
    for key in ("verdict", "rung", "diagnosis", "recommendation"):
        assert finished[key] == whole[key], key
    assert finished["n_epochs"] == len(epochs)
    stored = client.get(f"/api/v1/runs/{run['id']}").json()
    assert stored["verdict"] == "overfitting" and stored["diagnosis"] == whole["diagnosis"]
    # Finishing again changes nothing; an unknown run is a 404 naming it.
    assert client.post(f"/api/v1/runs/{run['id']}/finish").json()["diagnosis"] == whole["diagnosis"]
    r = client.post("/api/v1/runs/999999/finish")
    assert r.status_code == 404 and "999999" in r.json()["message"]


def test_an_append_can_answer_only_the_runs_last_epochs(client: TestClient) -> None:
    """A callback appends one evaluation at a time: ``tail`` keeps the answer from carrying the
    whole run back at every one, and changes nothing else in it."""
    epochs = overfit_epochs(20)
    run = post(client, epochs=epochs[:15])
    path = f"/api/v1/runs/{run['id']}/epochs"
    whole = client.post(path, json={"epochs": epochs[15:17]}).json()
    assert [e["epoch"] for e in whole["epochs"]] == list(range(17))
    short = client.post(path, params={"tail": 2}, json={"epochs": epochs[17:18]}).json()
    assert [e["epoch"] for e in short["epochs"]] == [16, 17] and short["n_epochs"] == 18
    again = client.get(f"/api/v1/runs/{run['id']}").json()
    assert {k: v for k, v in short.items() if k != "epochs"} == {
        k: v for k, v in again.items() if k != "epochs"
    }
    assert (
        client.post(path, params={"tail": 0}, json={"epochs": epochs[18:19]}).json()["epochs"] == []
    )
    more = client.post(path, params={"tail": 500}, json={"epochs": epochs[19:]}).json()
    assert len(more["epochs"]) == 20
    r = client.post(path, params={"tail": -1}, json={"epochs": overfit_epochs(21)[20:]})
    assert r.status_code == 422 and "tail" in r.text
    assert client.get(f"/api/v1/runs/{run['id']}").json()["n_epochs"] == 20, "nothing stored"
