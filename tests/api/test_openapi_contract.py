"""The OpenAPI document states the rules the server enforces (issue 17): requests the document
rules out are refused and those it allows are taken, checked by validating each request against
the document and sending it, on SQLite and PostgreSQL."""

import itertools
from functools import cache
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import overfit_epochs
from tests.worker.test_verification_api import RECIPE

# The document does not depend on the database: every app serves this one.
DOCUMENT = create_app(Settings(database_url="sqlite://")).openapi()


@cache
def validator(component: str) -> jsonschema_rs.Validator:
    schema = {"$ref": f"#/components/schemas/{component}", "components": DOCUMENT["components"]}
    return jsonschema_rs.Draft202012Validator(schema)


def allows(component: str, body: Any) -> bool:
    return bool(validator(component).is_valid(body))


def test_the_document_says_types_are_strict(client: TestClient) -> None:
    description = client.get("/openapi.json").json()["info"]["description"]
    assert description == DOCUMENT["info"]["description"]
    assert "strict types" in description
    assert "`5.0`" in description  # a whole number does for an integer


def test_bounds_are_stated_as_the_integers_they_are(client: TestClient) -> None:
    # 2**63 - 1 written as a float would read 9223372036854775808 (and as text, ...776000).
    text = client.get("/openapi.json").text
    assert '"exclusiveMaximum":9223372036854775808' in text
    assert "e+18" not in text


CHOICES = {"rung": "augment", "rungs": ["mixup", "dropout_head"], "race": 2}
GIVEN = ["absent", "null", "given"]


@pytest.mark.parametrize("given", list(itertools.product(GIVEN, repeat=3)), ids=str)
def test_rung_rungs_and_race_exclude_each_other_as_the_document_says(
    client: TestClient, given: tuple[str, str, str]
) -> None:
    body = {
        key: None if how == "null" else value
        for (key, value), how in zip(CHOICES.items(), given, strict=True)
        if how != "absent"
    }
    run = client.post("/api/v1/runs", json={"recipe": RECIPE, "epochs": overfit_epochs()}).json()
    r = client.post(f"/api/v1/runs/{run['id']}/verifications", json=body)
    allowed = allows("VerificationCreate", body)
    assert allowed == (given.count("given") <= 1)
    assert r.status_code == (202 if allowed else 422), r.text


@pytest.mark.parametrize(
    ("gpus", "device"), [(1, "cuda:1"), (2, "cuda:1"), (2, "cuda"), (4, "auto"), (1, "cpu")]
)
def test_several_gpus_with_one_device_named_are_refused_as_the_document_says(
    client: TestClient, gpus: int, device: str
) -> None:
    body = {"rung": "augment", "gpus": gpus, "device": device}
    run = client.post("/api/v1/runs", json={"recipe": RECIPE, "epochs": overfit_epochs()}).json()
    r = client.post(f"/api/v1/runs/{run['id']}/verifications", json=body)
    allowed = allows("VerificationCreate", body)
    assert allowed == (gpus == 1 or ":" not in device)
    assert r.status_code == (202 if allowed else 422), r.text


@pytest.mark.parametrize(
    "name",
    [
        "accuracy",
        "ACCURACY",
        "Top1_Error",
        "valid_loss",
        "bleurgh",
        "accuracy2",
        "sparse_categorical_accuracy",
        "Matthews_Correlation",
        "mean_absolute_error",
        "val_accuracy",
        "EVAL_wer",
        "val_bleurgh",
    ],
)
@pytest.mark.parametrize("direction", ["absent", None, True])
def test_a_metric_needs_its_direction_unless_known_as_the_document_says(
    client: TestClient, name: str, direction: bool | str | None
) -> None:
    metric: dict[str, Any] = {"name": name}
    if direction != "absent":
        metric["higher_is_better"] = direction
    epochs = overfit_epochs(6)
    if name != "valid_loss":
        epochs = [{**e, "metrics": {name: 0.5}} for e in epochs]
    r = client.post("/api/v1/runs", json={"metric": metric, "epochs": epochs})
    allowed = allows("MetricSpec", metric)
    assert allowed == (
        direction is True or name.lower() not in ("bleurgh", "accuracy2", "val_bleurgh")
    )
    assert r.status_code == (201 if allowed else 422), r.text


@pytest.mark.parametrize("char", ["\x00", "\x1f", "\x7f", "\x9f", "\xa0", "é", "\u2028", "😀"])
def test_the_tag_pattern_is_the_rule_the_server_applies(client: TestClient, char: str) -> None:
    tag = f"a{char}b"
    r = client.post("/api/v1/runs", json={"tags": [tag], "epochs": overfit_epochs(6)})
    allowed = allows("RunCreate", {"tags": [tag], "epochs": []})
    assert allowed == (char not in "\x00\x1f\x7f\x9f")
    assert r.status_code == (201 if allowed else 422), r.text


def test_the_cursors_given_match_the_documented_pattern(client: TestClient) -> None:
    for _ in range(3):
        client.post("/api/v1/runs", json={"epochs": overfit_epochs(6)})
    page = client.get("/api/v1/runs", params={"limit": 1}).json()
    assert allows("RunPage", page)
    cursor = page["next_cursor"]
    assert cursor is not None
    assert client.get("/api/v1/runs", params={"limit": 1, "cursor": cursor}).status_code == 200
    for bad in ("a+b", "a/b", "a=", ""):
        assert not allows("RunPage", {**page, "next_cursor": bad})
        r = client.get("/api/v1/runs", params={"cursor": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["message"].startswith("cursor: ")
