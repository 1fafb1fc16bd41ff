"""The recipe contract: validation, canonical JSON, a fingerprint stable across processes."""

import json
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.builder.recipe import Recipe
from tests.conftest import overfit_epochs

SPEC = {
    "task": "classification", "arch": "simple_cnn", "image_size": 32, "epochs": 3,
    "head": {"ps": 0.25, "lin_ftrs": [64]}, "data": {"kind": "digits", "image_size": 32},
    "mixup": {"kind": "cutmix", "alpha": 0.3},
}  # fmt: skip


def test_fingerprint_is_stable_across_processes_and_key_order() -> None:
    recipe = Recipe.model_validate(SPEC)
    shuffled = Recipe.model_validate(json.loads(json.dumps(dict(reversed(list(SPEC.items()))))))
    assert shuffled.fingerprint() == recipe.fingerprint()
    code = (
        "import json, sys; from app.builder.recipe import Recipe; "
        "print(Recipe.model_validate(json.loads(sys.argv[1])).fingerprint())"
    )
    other = subprocess.run([sys.executable, "-c", code, json.dumps(SPEC)], capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert other.stdout.strip() == recipe.fingerprint()
    assert recipe.changed({"head.ps": 0.5}).fingerprint() != recipe.fingerprint()
    assert Recipe.model_validate_json(recipe.canonical_json()) == recipe


@pytest.mark.parametrize(
    ("change", "words"),
    [({"arch": "resnet9000"}, "unknown architecture 'resnet9000'"),
     ({"head": {"ps": 1.0}}, "head.ps"),
     ({"data": {"path": "x"}}, "needs a 'kind'"),
     ({"task": "segmentation"}, "segmentation masks"),
     ({"optimizer": "sgd"}, "optimizer")],
)  # fmt: skip
def test_invalid_recipes_are_refused(change: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        Recipe.model_validate({**SPEC, **change})
    text = str(err.value).replace("\n", " ")
    assert words.split(".", maxsplit=1)[0] in text


def test_changed_rejects_unknown_paths() -> None:
    with pytest.raises(KeyError, match=r"no field 'head\.size'"):
        Recipe.model_validate(SPEC).changed({"head.size": 3})


def test_a_reported_recipe_drives_the_ladder(client: TestClient) -> None:
    recipe = {"arch": "simple_cnn", "head": {"ps": 0.0}, "augment": "strong",
              "mixup": {"kind": "mixup", "alpha": 0.4}, "data": {"kind": "digits"}}  # fmt: skip
    r = client.post("/api/v1/runs", json={"recipe": recipe, "epochs": overfit_epochs(),
                                          "data": {"more_data_available": False}})  # fmt: skip
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["recipe"]["arch"] == "simple_cnn"
    assert run["recommendation"]["rung"] == "batchnorm"
    assert run["recommendation"]["change"] == {"batchnorm": True, "arch": "simple_cnn_bn"}
    bad = client.post("/api/v1/runs", json={"recipe": {"arch": "resnet9000"}, "epochs": []})
    assert bad.status_code == 422
    assert "recipe.arch" in bad.json()["message"]
