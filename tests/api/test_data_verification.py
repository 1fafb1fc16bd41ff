"""Your own data, end to end through the API: a CSV-labelled folder, a multi-label CSV and a
segmentation folder, each generated here, reported with a recipe, verified by the embedded
worker, the verdict stored (on SQLite and PostgreSQL). Bad files found when the images are
decoded, before training, fail the verification with a message naming the file; with
``skip_bad`` they are skipped and the verification goes on."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.builder.data_folders import corrupt, image_csv, mask, segmentation_folder
from tests.conftest import make_client, overfit_epochs
from tests.worker.test_verification_api import wait

RECIPE: dict[str, Any] = {
    "arch": "simple_cnn_small", "head": {"ps": 0.0, "lin_ftrs": [32]}, "epochs": 2,
    "batch_size": 16, "lr": 3e-3, "image_size": 16,
}  # fmt: skip
CSV = {"kind": "image_csv", "path": "csvpets", "folder": "images", "image_size": 16}
MULTI = {**CSV, "path": "multi", "label_delim": " ", "valid_col": "is_valid"}
SEG = {"kind": "segmentation_folder", "path": "camvid", "mask_suffix": "_P", "image_size": 16}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    image_csv(root, "csvpets", n=24)
    image_csv(root, "multi", n=24, multi=True, valid_col=True)
    segmentation_folder(root, "camvid", n=12)
    return root


@pytest.fixture
def client(db_url: str, root: Path) -> Iterator[TestClient]:
    with make_client(db_url, data_roots=[root], worker="embedded", worker_poll_s=0.1,
                     worker_lease_s=20) as c:  # fmt: skip
        yield c


def verify(client: TestClient, data: dict[str, Any], **recipe: Any) -> dict[str, Any]:
    """Report a run training on ``data``, verify the augment rung over two seeds, wait."""
    body = {"name": data["path"], "recipe": {**RECIPE, **recipe, "data": data},
            "epochs": overfit_epochs(6)}  # fmt: skip
    run = client.post("/api/v1/runs", json=body)
    assert run.status_code == 201, run.text
    job = client.post(f"/api/v1/runs/{run.json()['id']}/verifications",
                      json={"rung": "augment", "seeds": 2})  # fmt: skip
    assert job.status_code == 202, job.text
    return wait(client, job.json()["id"])


@pytest.mark.parametrize(
    ("data", "recipe", "task", "metric"),
    [
        (CSV, {}, "classification", "accuracy"),
        (MULTI, {}, "multi_label", "accuracy_multi"),
        (SEG, {"arch": "simple_cnn_small_bn"}, "segmentation", "iou"),
    ],
    ids=["csv", "multi-label csv", "segmentation folder"],
)
def test_your_own_data_is_verified_end_to_end(
    client: TestClient, data: dict[str, Any], recipe: dict[str, Any], task: str, metric: str
) -> None:
    job = verify(client, data, **recipe)
    assert job["status"] == "succeeded", job
    assert job["verdict"] in ("confirmed", "refuted", "inconclusive")
    result = job["result"]
    assert result["metric"] == metric and len(result["per_seed"]) == 4
    for figures in result["per_seed"]:
        assert 0 <= figures["best_metric"] <= 1
    # The task follows the data when the recipe names none.
    assert job["candidate_recipe"]["task"] == task
    assert job["candidate_recipe"]["augment"] == "basic"


def spoil(root: Path, case: str) -> dict[str, Any]:
    if case == "corrupt image":
        corrupt(root / "csvpets" / "images" / "5.png")
        return CSV
    values = np.zeros((8, 8) if case == "mask of another size" else (16, 16))
    values[3, 3] = 0 if case == "mask of another size" else 9
    mask(root / "camvid" / "labels" / "5_P.png", values)
    return SEG


BAD = [
    ("corrupt image", "recipe.data.csv: labels.csv line 7: '5.png': not a readable image"),
    ("mask of another size",
     "recipe.data.masks: 'images/5.png': its mask '5_P.png' is 8x8, the image 16x16"),
    ("pixel outside the codes", "recipe.data.codes: 'images/5.png': its mask '5_P.png' has "
     "pixel value 9, outside the codes (0 to 1)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_files_fail_the_verification_naming_them_unless_skipped(
    client: TestClient, root: Path, case: str, message: str
) -> None:
    data = spoil(root, case)
    arch = {"arch": "simple_cnn_small_bn"} if data is SEG else {}
    job = verify(client, data, **arch)
    assert job["status"] == "failed", job
    assert f"DataError: {message}" in job["error"], job["error"]
    skipped = verify(client, {**data, "skip_bad": True}, **arch)
    assert skipped["status"] == "succeeded", skipped
    # The result says what was skipped, naming the file.
    assert skipped["result"]["skipped_bad"] == 1
    assert "5.png'" in skipped["result"]["skipped_reason"]
    assert all(line["skipped_bad"] == 1 for line in skipped["result"]["per_seed"])
