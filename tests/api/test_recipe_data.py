"""A report's recipe names data the service can serve, or it is refused when it arrives: 422
naming the field, nothing stored (on SQLite and PostgreSQL). The same check runs again when a
verification is asked for, since the data may have gone since the report."""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.builder.data_folders import image_csv, image_folder, segmentation_folder
from tests.conftest import make_client, overfit_epochs
from tests.worker.test_verification_api import RECIPE


def report(data: dict[str, Any] | None) -> dict[str, Any]:
    return {"name": "data", "recipe": {**RECIPE, "data": data}, "epochs": overfit_epochs(6)}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root holding ``pets`` (class folders), ``csvpets`` (a CSV), ``camvid`` (a
    segmentation folder) and ``escape``, a symlink out of it."""
    root = tmp_path / "root"
    image_folder(root, "pets", per_class=2)
    image_csv(root, "csvpets", n=4)
    segmentation_folder(root, "camvid", n=2)
    (root / "escape").symlink_to(tmp_path)
    return root


@pytest.fixture
def client(db_url: str, root: Path) -> Iterator[TestClient]:
    with make_client(db_url, data_roots=[root]) as c:
        yield c


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown kind", {"kind": "mnist"}, "recipe.data.kind", "does not match any of"),
    ("bad option", {"kind": "digits", "image_size": 2}, "recipe.data.image_size", "8"),
    ("unknown option", {"kind": "digits", "size": 32}, "recipe.data.size", "not permitted"),
    ("more than the split", {"kind": "digits", "n_train": 1439}, "recipe.data.n_train", "1438"),
    ("no path", {"kind": "image_folder"}, "recipe.data.path", "required"),
    ("path out of the root", {"kind": "image_folder", "path": "../"}, "recipe.data.path",
     "not a folder inside the data roots"),
    ("absolute path", {"kind": "image_folder", "path": "/etc"}, "recipe.data.path",
     "must be relative"),
    ("symlink out of the root", {"kind": "image_folder", "path": "escape"}, "recipe.data.path",
     "not a folder inside the data roots"),
    ("missing folder", {"kind": "image_folder", "path": "dogs"}, "recipe.data.path",
     "not a folder inside the data roots"),
    ("csv out of the root", {"kind": "image_csv", "path": "escape"}, "recipe.data.path",
     "not a folder inside the data roots"),
    ("csv without the column", {"kind": "image_csv", "path": "csvpets", "label_col": "tags"},
     "recipe.data.label_col", "labels.csv has no column 'tags' (its columns: fname, labels)"),
    ("csv row naming a missing file", {"kind": "image_csv", "path": "csvpets"},
     "recipe.data.csv", "labels.csv line 2: '0.png' does not exist"),
    ("no codes", {"kind": "segmentation_folder", "path": "camvid", "codes": "codes"},
     "recipe.data.codes", "'codes' is not a file in 'camvid'"),
    ("no masks", {"kind": "segmentation_folder", "path": "camvid"}, "recipe.data.masks",
     "'images/0.png': no mask '0.*' in 'labels'"),
    ("unknown csv option", {"kind": "image_csv", "path": "csvpets", "delimiter": ";"},
     "recipe.data.delimiter", "not permitted"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "data", "field", "words"), CASES, ids=[c[0] for c in CASES])
def test_a_recipe_naming_data_that_cannot_be_served_is_refused_and_nothing_stored(
    client: TestClient, case: str, data: dict[str, Any], field: str, words: str
) -> None:
    r = client.post("/api/v1/runs", json=report(data))
    assert r.status_code == 422, r.text
    answer = r.json()
    assert answer["field"] == field, answer
    assert answer["message"].startswith(f"{field}: ") and words in answer["message"], answer
    assert client.get("/api/v1/runs").json()["items"] == []


def test_servable_data_and_recipes_without_data_are_stored(client: TestClient) -> None:
    for data in (
        {"kind": "image_folder", "path": "pets"},
        {"kind": "image_csv", "path": "csvpets", "folder": "images"},
        {"kind": "segmentation_folder", "path": "camvid", "mask_suffix": "_P"},
        {"kind": "digits"},
        None,
    ):
        r = client.post("/api/v1/runs", json=report(data))
        assert r.status_code == 201, r.text
        assert r.json()["recipe"]["data"] == data


def test_without_data_roots_no_image_folder_is_accepted(db_url: str) -> None:
    with make_client(db_url) as client:
        r = client.post("/api/v1/runs", json=report({"kind": "image_folder", "path": "pets"}))
        assert r.status_code == 422, r.text
        assert r.json()["message"] == (
            "recipe.data.path: no data roots are configured (ADVISOR_DATA_ROOTS)"
        )
        assert client.get("/api/v1/runs").json()["items"] == []


def test_a_refused_report_leaves_its_idempotency_key_unused(client: TestClient) -> None:
    key = {"Idempotency-Key": "report-1"}
    bad = client.post("/api/v1/runs", json=report({"kind": "mnist"}), headers=key)
    assert bad.status_code == 422, bad.text
    good = client.post("/api/v1/runs", json=report({"kind": "digits"}), headers=key)
    assert good.status_code == 201, good.text


def verify(client: TestClient, data: dict[str, Any] | None, gone: Path | None = None) -> Any:
    """Report a run whose recipe has ``data``, remove the folder ``gone``, ask to verify it."""
    run = client.post("/api/v1/runs", json=report(data))
    assert run.status_code == 201, run.text
    if gone is not None:
        shutil.rmtree(gone)
    return client.post(f"/api/v1/runs/{run.json()['id']}/verifications", json={"rung": "augment"})


def test_data_gone_since_the_report_is_refused_at_the_verification(
    client: TestClient, root: Path
) -> None:
    r = verify(client, {"kind": "image_folder", "path": "pets"}, gone=root / "pets")
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "recipe.data.path"
    assert "'pets' is not a folder inside the data roots" in r.json()["message"]
    r = verify(client, None)
    assert r.status_code == 422, r.text
    assert r.json()["message"] == "recipe.data: the recipe names no dataset"
    assert client.get("/api/v1/verifications").json() == []
    assert verify(client, {"kind": "digits"}).status_code == 202
