"""Every kind of bad report answers 4xx naming the field, and leaves nothing stored."""

import base64
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.schemas import FREE_FORM_LEVELS, RunCreate
from tests.conftest import make_client, overfit_epochs
from tests.worker.test_verification_api import RECIPE


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
    (
        "loss true or false",
        report(epochs=with_epoch(1, valid_loss=False)),
        422,
        "epochs[1].valid_loss",
    ),
    (
        "metric true or false",
        report(epochs=with_epoch(2, metrics={"accuracy": True})),
        422,
        "epochs[2].metrics.accuracy",
    ),
    ("epoch number false", report(epochs=with_epoch(0, epoch=False)), 422, "epochs[0].epoch"),
    ("duplicated epoch", report(epochs=with_epoch(3, epoch=2)), 422, "epochs[3].epoch"),
    ("epochs out of order", report(epochs=with_epoch(3, epoch=1)), 422, "epochs[3].epoch"),
    ("negative epoch number", report(epochs=with_epoch(0, epoch=-1)), 422, "epochs[0].epoch"),
    (
        "fractional epoch out of order",
        report(epochs=with_epoch(3, epoch=1.5)),
        422,
        "epochs[3].epoch",
    ),
    (
        "missing training loss",
        report(epochs=[{"epoch": 0, "valid_loss": 1.0}]),
        422,
        "epochs[0].train_loss",
    ),
    ("negative step", report(epochs=with_epoch(0, step=-1)), 422, "epochs[0].step"),
    ("step false", report(epochs=with_epoch(0, step=False)), 422, "epochs[0].step"),
    ("fractional step", report(epochs=with_epoch(0, step=2.5)), 422, "epochs[0].step"),
    (
        "steps out of order",
        report(
            epochs=[
                {**e, "step": [10, 20, 30, 25, 40, 50][i]} for i, e in enumerate(overfit_epochs(6))
            ]
        ),
        422,
        "epochs[3].step",
    ),
    ("learning rate of zero", report(epochs=with_epoch(1, lr=0)), 422, "epochs[1].lr"),
    ("learning rate true", report(epochs=with_epoch(1, lr=True)), 422, "epochs[1].lr"),
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
    # p = 1 zeroes every activation: the same bound as a recipe's dropout.
    ("dropout of 1", report(model={"body_dropout": 1.0}), 422, "model.body_dropout"),
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
@pytest.mark.parametrize("where", ["epoch", "train_loss", "valid_loss", "lr", "metric", "param"])
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


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"epochs": [', "at character 12 (Expecting value)"),
        (b'{"name": "\xff"}', "at character 10 (not UTF-8: invalid start byte)"),
        (b"[" * 100_000 + b"]" * 100_000, "at character 0 (nested too deeply)"),
    ],
    ids=["truncated", "not UTF-8", "nested too deeply"],
)
def test_malformed_json_is_refused_naming_the_body(
    client: TestClient, body: bytes, why: str
) -> None:
    for path in ("/api/v1/runs", "/api/v1/runs/1/epochs", "/api/v1/runs/1/verifications"):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["message"] == f"body: not valid JSON {why}"
        assert r.json()["detail"][0]["field"] == "body"


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


# --- ids, text, numbers and dates beyond what the database keeps (issue 11) ---------------------

ID_MAX = 2**31 - 1
# Beyond PostgreSQL's integer, beyond SQLite's (int64) integer, and below the first id.
BAD_IDS = [2**31, 2**63, 0, -1]
ID_ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/api/v1/runs/{n}", None, "run_id"),
    ("GET", "/api/v1/runs/{n}/lineage", None, "run_id"),
    ("POST", "/api/v1/runs/{n}/epochs", {"epochs": overfit_epochs(1)}, "run_id"),
    ("POST", "/api/v1/runs/{n}/verifications", {}, "run_id"),
    ("GET", "/api/v1/verifications/{n}", None, "job_id"),
    ("POST", "/api/v1/verifications/{n}/cancel", None, "job_id"),
    ("GET", "/api/v1/verifications?run_id={n}", None, "run_id"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"), ID_ROUTES, ids=[f"{r[0]} {r[1]}" for r in ID_ROUTES]
)
def test_ids_outside_the_column_range_answer_422_naming_the_parameter(
    client: TestClient, method: str, path: str, body: Any, field: str
) -> None:
    for n in BAD_IDS:
        r = client.request(method, path.format(n=n), json=body)
        assert r.status_code == 422, (n, r.text)
        message = r.json()["message"]
        assert message.startswith(f"{field}: "), r.json()
        assert "2147483647" in message or "greater than or equal to 1" in message


def test_the_largest_id_is_merely_not_found(client: TestClient) -> None:
    r = client.get(f"/api/v1/runs/{ID_MAX}")
    assert r.status_code == 404
    assert r.json()["message"] == f"run {ID_MAX} not found"
    assert client.get(f"/api/v1/verifications?run_id={ID_MAX}").json() == []


def test_parent_ids_and_cursors_outside_the_column_range_are_refused(client: TestClient) -> None:
    for n in (2**31, 2**63, 2**70, 0):
        # json.dumps writes 2**70 exactly; orjson alone would have read it as a float.
        r = client.post(
            "/api/v1/runs",
            content=json.dumps(report(parent_id=n)),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, (n, r.text)
        assert r.json()["message"].startswith("parent_id: ")
        cursor = base64.urlsafe_b64encode(f"r{n}".encode()).decode().rstrip("=")
        r = client.get("/api/v1/runs", params={"cursor": cursor})
        assert r.status_code == 422, (n, r.text)
        assert r.json()["message"] == "cursor: malformed cursor"
    assert client.get("/api/v1/runs").json()["items"] == []


def recipe(**data: Any) -> dict[str, Any]:
    return {"data": {"kind": "image_folder", "path": "pets", **data}}


def epochs_with_metric(name: str) -> list[dict[str, Any]]:
    return [{**e, "metrics": {name: 0.5}} for e in overfit_epochs(6)]


NUL = "a\u0000b"
NUL_CASES: list[tuple[str, Any, str]] = [
    ("run name", report(name=NUL), "name"),
    ("project", report(project=NUL), "project"),
    ("metric name", report(metric={"name": NUL}), "metric.name"),
    ("metric key in an epoch", report(epochs=epochs_with_metric(NUL)), "epochs[0].metrics"),
    ("model arch", report(model={"arch": NUL}), "model.arch"),
    ("model fact value", report(model={"optimizer": NUL}), "model.optimizer"),
    ("model fact key", report(model={NUL: 1}), "model.a\\x00b"),
    ("nested data fact", report(data={"source": {"urls": ["ok", NUL]}}), "data.source.urls[1]"),
    ("dataset path", report(recipe=recipe(path=NUL)), "recipe.data.path"),
    ("dataset spec key", report(recipe=recipe(**{NUL: 1})), "recipe.data.a\\x00b"),
    ("recipe arch", report(recipe={"arch": NUL}), "recipe.arch"),
    ("tag", report(tags=["ok", NUL]), "tags[1]"),
    ("param key", report(params={NUL: 1}), "params.a\\x00b"),
    ("param value", report(params={"note": NUL}), "params.note"),
]


@pytest.mark.parametrize(("case", "body", "field"), NUL_CASES, ids=[c[0] for c in NUL_CASES])
def test_nul_characters_are_refused_in_every_text_field(
    client: TestClient, case: str, body: Any, field: str
) -> None:
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 422, r.text
    message = r.json()["message"]
    assert message.startswith(f"{field}"), message
    assert "NUL" in message
    assert client.get("/api/v1/runs").json()["items"] == []


def test_nul_characters_are_refused_in_appended_epochs_and_queries(client: TestClient) -> None:
    run = client.post("/api/v1/runs", json=report(epochs=epochs_with_metric("acc"))).json()
    more = [{"epoch": 6, "train_loss": 0.1, "valid_loss": 0.9, "metrics": {NUL: 0.5}}]
    r = client.post(f"/api/v1/runs/{run['id']}/epochs", json={"epochs": more})
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith("epochs[0].metrics")
    assert client.get(f"/api/v1/runs/{run['id']}").json()["n_epochs"] == 6
    for param in ("name", "project", "tag", "cursor"):
        r = client.get("/api/v1/runs", params={param: NUL})
        assert r.status_code == 422, (param, r.text)
        assert r.json()["message"].startswith(f"{param}: "), r.json()


NAN = float("nan")
NUMBER_CASES: list[tuple[str, Any, str]] = [
    ("NaN in a model fact", report(model={"momentum": NAN}), "model.momentum"),
    ("Infinity deep in a data fact", report(data={"stats": {"std": [1.0, -math.inf]}}),
     "data.stats.std[1]"),
    ("NaN in a dataset spec", report(recipe=recipe(extra=NAN)), "recipe.data.extra"),
    ("2**70 in a data fact", report(data={"n_images": 2**70}), "data.n_images"),
    ("2**64 as n_train", report(data={"n_train": 2**64}), "data.n_train"),
    ("-2**63-1 in a model fact", report(model={"seed": -(2**63) - 1}), "model.seed"),
    ("2**70 in a dataset spec", report(recipe=recipe(seed=2**70)), "recipe.data.seed"),
    ("2**70 as a param", report(params={"seed": 2**70}), "params.seed"),
    ("2**63 as a param", report(params={"seed": 2**63}), "params.seed"),
    ("2**31 as an epoch number", report(epochs=with_epoch(5, epoch=2**31)), "epochs[5].epoch"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "field"), NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_numbers_that_would_not_come_back_as_sent_are_refused(
    client: TestClient, case: str, body: Any, field: str
) -> None:
    # As Python's encoder writes them: NaN/Infinity literals, integers of any size.
    r = client.post(
        "/api/v1/runs", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith(f"{field}: "), r.json()
    assert client.get("/api/v1/runs").json()["items"] == []


def test_64_bit_integers_come_back_exactly(client: TestClient) -> None:
    big, small = 2**63 - 1, -(2**63)
    body = report(params={"big": big, "small": small}, data={"n_images": big, "n": [small]})
    r = client.post(
        "/api/v1/runs", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code == 201, r.text
    stored = client.get(f"/api/v1/runs/{r.json()['id']}").json()
    assert stored["params"] == {"big": big, "small": small}
    assert stored["data"]["n_images"] == big
    assert stored["data"]["n"] == [small]


def test_dates_without_a_timezone_are_read_as_utc(client: TestClient) -> None:
    client.post("/api/v1/runs", json=report())
    now = datetime.now(UTC).replace(tzinfo=None)
    for param, moment, found in (
        ("created_after", now - timedelta(hours=1), 1),
        ("created_after", now + timedelta(hours=1), 0),
        ("created_before", now + timedelta(hours=1), 1),
        ("created_before", now - timedelta(hours=1), 0),
    ):
        r = client.get("/api/v1/runs", params={param: moment.isoformat()})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == found, (param, moment)
    # A date whose conversion to UTC leaves the calendar is refused, naming the parameter.
    r = client.get("/api/v1/runs", params={"created_after": "0001-01-01T00:00:00+01:00"})
    assert r.status_code == 422
    assert r.json()["message"].startswith("created_after: ")
    spec = client.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/api/v1/runs"]["get"]["parameters"]}
    assert "UTC" in params["created_after"]["description"]
    assert "UTC" in params["created_before"]["description"]


# --- free-form JSON nested too deep (issue 17) ----------------------------------------------


def nested(levels: int, container: str = "object") -> Any:
    """``levels`` objects ({"a": {"a": ...}}) or arrays ([[...]]) inside one another."""
    value: Any = {} if container == "object" else []
    for _ in range(levels - 1):
        value = {"a": value} if container == "object" else [value]
    return value


def deep_report(where: str, levels: int, container: str = "object") -> dict[str, Any]:
    if where == "recipe.data":
        # The spec's own keys around the deep one: `data` is the first level, `deep` the second.
        return report(recipe={**RECIPE, "data": {"kind": "digits", "deep": nested(levels - 1)}})
    return report(**{where: {"deep": nested(levels - 1, container)}})


def deep_path(where: str, levels: int, container: str) -> str:
    """Where the walk finds the first level too many: ``levels`` deep, counting ``where``."""
    step = ".a" if container == "object" else "[0]"
    return f"{where}.deep" + step * (levels - 2)


DEEP = [("model", "object"), ("data", "array"), ("recipe.data", "object")]


@pytest.mark.parametrize(("where", "container"), DEEP, ids=[d[0] for d in DEEP])
@pytest.mark.parametrize("levels", [33, 300])
def test_free_form_json_nested_past_the_limit_is_refused_naming_the_field(
    client: TestClient, where: str, container: str, levels: int
) -> None:
    # 300 levels: past orjson's 254, where storing or answering the report failed with a 500.
    r = client.post("/api/v1/runs", json=deep_report(where, levels, container))
    assert r.status_code == 422, r.text
    assert r.json()["message"] == (
        f"{deep_path(where, FREE_FORM_LEVELS + 1, container)}: nested more than "
        f"{FREE_FORM_LEVELS} levels deep"
    )
    assert client.get("/api/v1/runs").json()["items"] == []


@pytest.mark.parametrize(("where", "container"), DEEP[:2], ids=[d[0] for d in DEEP[:2]])
def test_free_form_json_at_the_limit_is_kept_as_sent(
    client: TestClient, where: str, container: str
) -> None:
    body = deep_report(where, FREE_FORM_LEVELS, container)
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/runs/{r.json()['id']}").json()[where] == body[where]


def test_a_dataset_spec_at_the_limit_is_judged_as_a_spec_not_by_its_depth(
    client: TestClient,
) -> None:
    # A dataset spec has no key of its own to nest in: only its depth is the limit's business.
    r = client.post("/api/v1/runs", json=deep_report("recipe.data", FREE_FORM_LEVELS))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "recipe.data.deep"
    assert "nested" not in r.json()["message"]


def test_the_limit_is_stated_in_the_document(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    said = f"nested at most {FREE_FORM_LEVELS} levels deep"
    for field in ("model", "data", "recipe"):
        assert said in schemas["RunCreate"]["properties"][field]["description"], field


# --- strict types (issue 17) ----------------------------------------------------------------

LOOSE: list[tuple[str, Any, str]] = [
    ("count as a string", report(data={"n_train": "5000"}), "data.n_train"),
    ("fact as a string", report(model={"batchnorm": "off"}), "model.batchnorm"),
    ("constraint as a number", report(constraints={"memory_limited": 0}),
     "constraints.memory_limited"),
    ("constraint as a string", report(constraints={"time_limited": "yes"}),
     "constraints.time_limited"),
    ("epoch as a string", report(epochs=with_epoch(3, epoch="3")), "epochs[3].epoch"),
    ("direction as a number", report(metric={"name": "accuracy", "higher_is_better": 1}),
     "metric.higher_is_better"),
    ("loss as a numeric string", report(epochs=with_epoch(2, valid_loss="0.5")),
     "epochs[2].valid_loss"),
    ("step as a string", report(epochs=with_epoch(0, step="10")), "epochs[0].step"),
    ("learning rate as a string", report(epochs=with_epoch(0, lr="0.1")), "epochs[0].lr"),
    ("metric as a numeric string", report(epochs=with_epoch(1, metrics={"accuracy": "0.9"})),
     "epochs[1].metrics.accuracy"),
    ("count true", report(data={"n_classes": True}), "data.n_classes"),
    ("fraction as a string", report(data={"data_fraction": "1"}), "data.data_fraction"),
    ("dropout as a string", report(model={"head_dropout": "0.1"}), "model.head_dropout"),
    ("mixup alpha as a string", report(data={"mixup": {"kind": "mixup", "alpha": "0.2"}}),
     "data.mixup.alpha"),
    ("parent as a string", report(parent_id="1"), "parent_id"),
    ("name as a number", report(name=5), "name"),
    ("recipe epochs as a string", report(recipe={**RECIPE, "epochs": "3"}), "recipe.epochs"),
    ("recipe flag as a string", report(recipe={**RECIPE, "pretrained": "yes"}),
     "recipe.pretrained"),
    ("head width as a string", report(recipe={**RECIPE, "head": {"lin_ftrs": ["32"]}}),
     "recipe.head.lin_ftrs[0]"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "field"), LOOSE, ids=[c[0] for c in LOOSE])
def test_values_of_the_wrong_type_are_refused_naming_the_field(
    client: TestClient, case: str, body: Any, field: str
) -> None:
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith(f"{field}: "), r.json()
    assert r.json()["detail"][0]["field"] == field
    assert client.get("/api/v1/runs").json()["items"] == []


def test_appended_epochs_of_the_wrong_type_are_refused(client: TestClient) -> None:
    run = client.post("/api/v1/runs", json=report()).json()
    more = [{"epoch": "6", "train_loss": 0.1, "valid_loss": 0.9}]
    r = client.post(f"/api/v1/runs/{run['id']}/epochs", json={"epochs": more})
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith("epochs[0].epoch: ")
    assert client.get(f"/api/v1/runs/{run['id']}").json()["n_epochs"] == 6


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rung": "augment", "seeds": "3"}, "seeds"),
        ({"rung": "augment", "seeds": True}, "seeds"),
        ({"rung": "augment", "epochs": "2"}, "epochs"),
        ({"rung": "augment", "smallest_effect": "0.1"}, "smallest_effect"),
        ({"rung": "augment", "min_seeds": False}, "min_seeds"),
        ({"race": "2"}, "race"),
    ],
)
def test_verification_requests_of_the_wrong_type_are_refused(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    run = client.post("/api/v1/runs", json=report(recipe=RECIPE)).json()
    r = client.post(f"/api/v1/runs/{run['id']}/verifications", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith(field), r.json()
    assert client.get("/api/v1/verifications", params={"run_id": run["id"]}).json() == []


def test_json_numbers_are_taken_whatever_their_spelling(client: TestClient) -> None:
    """An integer does for a number and a whole number written 5000.0 for an integer: JSON does
    not tell them apart. Rungs, tasks and other choices are their strings."""
    epochs = [
        {"epoch": i, "train_loss": 2 - i // 3, "valid_loss": 1, "metrics": {"accuracy": 1},
         "lr": 1, "step": float(10 * i)}
        for i in range(6)
    ]  # fmt: skip
    body = report(
        epochs=epochs,
        task="classification",
        model={"head_dropout": 0, "weight_decay": 0, "lr": 1},
        # The recipe's own training-set size (a recipe must agree with its report).
        data={"n_train": 1438.0, "data_fraction": 1, "augment": "basic",
              "mixup": {"kind": "cutmix", "alpha": 1}},
        recipe={**RECIPE, "epochs": 3.0, "lr": 1, "head": {"ps": 0, "lin_ftrs": [32.0]}},
    )  # fmt: skip
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    run = client.get(f"/api/v1/runs/{r.json()['id']}").json()
    assert [e["valid_loss"] for e in run["epochs"]] == [1.0] * 6
    assert [e["step"] for e in run["epochs"]] == [0, 10, 20, 30, 40, 50]
    assert all(isinstance(e["step"], int) for e in run["epochs"])
    assert run["data"]["n_train"] == 1438 and isinstance(run["data"]["n_train"], int)
    assert run["data"]["mixup"] == {"kind": "cutmix", "alpha": 1.0}
    assert run["model"]["head_dropout"] == 0.0
    assert (run["recipe"]["epochs"], run["recipe"]["head"]["lin_ftrs"]) == (3, [32])

    child = client.post(
        "/api/v1/runs", json=report(parent_id=run["id"], applied_rung="augment")
    ).json()
    assert child["applied_rung"] == "augment"
    r = client.post(
        f"/api/v1/runs/{run['id']}/verifications",
        json={"rung": "mixup", "seeds": 3.0, "min_seeds": 2, "smallest_effect": 0},
    )
    assert r.status_code == 202, r.text
    assert (r.json()["rung"], r.json()["seeds"]) == ("mixup", [0, 1, 2])
    r = client.post(
        f"/api/v1/runs/{run['id']}/verifications", json={"rungs": ["augment", "dropout_head"]}
    )
    assert r.status_code == 202, r.text
    assert r.json()["rungs"] == ["augment", "dropout_head"]
