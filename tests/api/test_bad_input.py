"""Every kind of bad report answers 4xx naming the field, and leaves nothing stored."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.schemas import RunCreate
from tests.conftest import make_client, overfit_epochs


def report(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "bad", "epochs": overfit_epochs(6)}
    body.update(changes)
    return body


def with_epoch(i: int, **fields: Any) -> list[dict[str, Any]]:
    epochs = overfit_epochs(6)
    epochs[i] = {**epochs[i], **fields}
    return epochs


CASES: list[tuple[str, Any, int, str]] = [
    ("negative loss", report(epochs=with_epoch(2, valid_loss=-0.1)), 422, "epochs[2].valid_loss"),
    (
        "loss of wrong type",
        report(epochs=with_epoch(1, train_loss="low")),
        422,
        "epochs[1].train_loss",
    ),
    (
        "metric of wrong type",
        report(epochs=with_epoch(0, metrics={"accuracy": "high"})),
        422,
        "epochs[0].metrics.accuracy",
    ),
    ("duplicated epoch", report(epochs=with_epoch(3, epoch=2)), 422, "epochs[3].epoch"),
    ("epochs out of order", report(epochs=with_epoch(3, epoch=1)), 422, "epochs[3].epoch"),
    ("negative epoch number", report(epochs=with_epoch(0, epoch=-1)), 422, "epochs[0].epoch"),
    ("metric named but missing", report(metric={"name": "accuracy"}), 422, "epochs[0].metrics"),
    (
        "unknown metric direction",
        report(
            metric={"name": "bleurgh"},
            epochs=[{**e, "metrics": {"bleurgh": 1.0}} for e in overfit_epochs(6)],
        ),
        422,
        "metric.higher_is_better",
    ),
    ("missing epochs", {"name": "x"}, 422, "epochs"),
    ("epochs not a list", report(epochs={"epoch": 0}), 422, "epochs"),
    ("unknown top-level field", report(epoch=[]), 422, "epoch"),
    ("unknown task", report(task="regression"), 422, "task"),
    ("unknown augment", report(data={"augment": "lots"}), 422, "data.augment"),
    ("dropout above 1", report(model={"head_dropout": 1.5}), 422, "model.head_dropout"),
    ("data fraction of zero", report(data={"data_fraction": 0}), 422, "data.data_fraction"),
    (
        "wrong constraint type",
        report(constraints={"time_limited": "sometimes"}),
        422,
        "constraints.time_limited",
    ),
    ("unknown applied rung", report(applied_rung="pray"), 422, "applied_rung"),
    ("unknown parent", report(parent_id=424242), 422, "parent_id"),
    ("unknown project", report(project="nobody"), 422, "project"),
    ("body not an object", [1, 2, 3], 422, "body"),
    ("params not an object", report(params=["lr", 0.1]), 422, "params"),
    ("nested param", report(params={"optimizer": {"name": "adam"}}), 422, "params.optimizer"),
    ("null param", report(params={"lr": None}), 422, "params.lr"),
    ("param name empty", report(params={"": 1}), 422, "params"),
    ("param name too long", report(params={"k" * 65: 1}), 422, "params"),
    ("param string too long", report(params={"note": "x" * 501}), 422, "params.note"),
    ("NUL in a param", report(params={"note": "a\u0000b"}), 422, "params.note"),
    ("too many params", report(params={f"p{i}": i for i in range(201)}), 422, "params"),
    ("tags not a list", report(tags="pets"), 422, "tags"),
    ("tag not a string", report(tags=["ok", 3]), 422, "tags[1]"),
    ("empty tag", report(tags=["ok", ""]), 422, "tags[1]"),
    ("tag too long", report(tags=["t" * 65]), 422, "tags[0]"),
    ("NUL in a tag", report(tags=["a\u0000b"]), 422, "tags[0]"),
    ("control character in a tag", report(tags=["ok", "line\nbreak"]), 422, "tags[1]"),
    ("too many tags", report(tags=[f"t{i}" for i in range(51)]), 422, "tags"),
]


@pytest.mark.parametrize(("case", "body", "status", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_report_is_refused_and_nothing_stored(
    client: TestClient, case: str, body: Any, status: int, field: str
) -> None:
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == status, r.text
    assert field in r.json()["message"], r.json()
    assert client.get("/api/v1/runs").json()["items"] == []


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["train_loss", "valid_loss", "metric", "param"])
def test_non_finite_values_are_refused(client: TestClient, value: str, where: str) -> None:
    # Python's JSON encoder writes NaN/Infinity literals, as careless clients do.
    epochs = overfit_epochs(6)
    if where == "param":
        r = client.post(
            "/api/v1/runs",
            content=json.dumps({"epochs": epochs, "params": {"lr": float(value)}}),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, r.text
        assert "params.lr" in r.json()["message"]
        assert client.get("/api/v1/runs").json()["items"] == []
        return
    if where == "metric":
        epochs[4]["metrics"] = {"accuracy": float(value)}
        field = "epochs[4].metrics.accuracy"
    else:
        epochs[4][where] = float(value)
        field = f"epochs[4].{where}"
    r = client.post(
        "/api/v1/runs",
        content=json.dumps({"epochs": epochs}),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]
    assert client.get("/api/v1/runs").json()["items"] == []


def test_param_integers_beyond_64_bits_are_refused() -> None:
    # orjson reads such a literal as a float already; the contract refuses it on any other path.
    with pytest.raises(ValidationError, match=r"params\.seed"):
        RunCreate.model_validate(report(params={"seed": 2**64}))


def test_malformed_json_is_refused(client: TestClient) -> None:
    r = client.post(
        "/api/v1/runs", content=b'{"epochs": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "JSON" in r.json()["message"]


def test_body_over_the_limit_is_refused(db_url: str) -> None:
    with make_client(db_url, max_body_bytes=4096) as client:
        body = json.dumps(report(epochs=overfit_epochs(200))).encode()
        assert len(body) > 4096
        r = client.post("/api/v1/runs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert "4096" in r.json()["message"]

        def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
            for i in range(0, len(body), 1000):
                yield body[i : i + 1000]

        r = client.post(
            "/api/v1/runs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        assert client.get("/api/v1/runs").json()["items"] == []


def test_too_many_epochs_is_refused(db_url: str) -> None:
    with make_client(db_url, max_epochs=10) as client:
        r = client.post("/api/v1/runs", json=report(epochs=overfit_epochs(11)))
        assert r.status_code == 422
        assert "epochs" in r.json()["message"]
        run = client.post("/api/v1/runs", json=report(epochs=overfit_epochs(10)[:8])).json()
        r = client.post(
            f"/api/v1/runs/{run['id']}/epochs",
            json={
                "epochs": [
                    *overfit_epochs(10)[8:],
                    {"epoch": 10, "train_loss": 0.1, "valid_loss": 0.9},
                ]
            },
        )
        assert r.status_code == 422
        assert client.get(f"/api/v1/runs/{run['id']}").json()["n_epochs"] == 8


def test_bad_query_parameters(client: TestClient) -> None:
    for params, field in (
        ({"verdict": "great"}, "verdict"),
        ({"rung": "x"}, "rung"),
        ({"limit": 0}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"tag": ""}, "tag"),
        ({"tag": "t" * 65}, "tag"),
        ({"tag": "a\nb"}, "tag"),
    ):
        r = client.get("/api/v1/runs", params=params)
        assert r.status_code == 422, (params, r.text)
        assert field in r.json()["message"]
