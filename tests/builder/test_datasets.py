"""Dataset specs and their checks, without torch: kinds and options name the field to blame,
paths stay inside the data roots, and the training split's size is known from the spec."""

from pathlib import Path
from typing import Any

import pytest

from app.builder.datasets import DataError, DigitsSpec, check_spec, parse_spec, train_size


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (None, "recipe.data"),
        ({"kind": "mnist"}, "recipe.data.kind"),
        ({"kind": "digits", "n_train": 5}, "recipe.data.n_train"),
        # The training split has 1438 images at valid_pct 0.2: a check across fields.
        ({"kind": "digits", "n_train": 1439}, "recipe.data.n_train"),
        ({"kind": "digits", "label_noise": 1.0}, "recipe.data.label_noise"),
        ({"kind": "digits", "label_noise": -0.1}, "recipe.data.label_noise"),
        ({"kind": "digits", "noise_labels": 0.1}, "recipe.data.noise_labels"),
        ({"kind": "shapes", "max_shapes": 0}, "recipe.data.max_shapes"),
        ({"kind": "shapes", "noise": -1}, "recipe.data.noise"),
        ({"kind": "image_folder"}, "recipe.data.path"),
    ],
)
def test_bad_specs_name_their_field(data: dict[str, Any] | None, field: str) -> None:
    with pytest.raises(DataError) as err:
        parse_spec(data)
    assert err.value.field == field
    assert str(err.value) == f"{field}: {err.value.reason}"


def test_n_train_bound_follows_valid_pct() -> None:
    spec = parse_spec({"kind": "digits", "n_train": 1617, "valid_pct": 0.1})
    assert isinstance(spec, DigitsSpec) and spec.n_train == 1617
    with pytest.raises(DataError, match="1618 is more than the 1617 images") as err:
        parse_spec({"kind": "digits", "n_train": 1618, "valid_pct": 0.1})
    assert err.value.field == "recipe.data.n_train"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root holding ``pets/cat`` and ``escape``, a symlink out of it."""
    root = tmp_path / "root"
    (root / "pets" / "cat").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path)
    return root


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("../", "not a folder inside the data roots"),
        ("/etc", "must be relative to a data root"),
        ("escape", "not a folder inside the data roots"),
        ("missing", "not a folder inside the data roots"),
        ("pets/cat/../../..", "not a folder inside the data roots"),
    ],
)
def test_image_folders_stay_inside_the_data_roots(root: Path, path: str, words: str) -> None:
    with pytest.raises(DataError, match=words) as err:
        check_spec({"kind": "image_folder", "path": path}, [root])
    assert err.value.field == "recipe.data.path"
    assert check_spec({"kind": "image_folder", "path": "pets"}, [root]).kind == "image_folder"


def test_no_data_roots_serve_no_image_folder(root: Path) -> None:
    with pytest.raises(DataError, match=r"no data roots are configured \(ADVISOR_DATA_ROOTS\)"):
        check_spec({"kind": "image_folder", "path": "pets"}, [])
    # Generated and bundled datasets need no root.
    assert check_spec({"kind": "digits"}, []).kind == "digits"


@pytest.mark.parametrize(
    ("data", "size"),
    [
        ({"kind": "digits"}, 1438),
        ({"kind": "digits", "valid_pct": 0.1}, 1617),
        ({"kind": "digits", "n_train": 100}, 100),
        ({"kind": "random_labels", "n": 400}, 320),
        ({"kind": "shapes", "n": 600, "valid_pct": 0.25}, 450),
        ({"kind": "image_folder", "path": "pets"}, None),
    ],
)
def test_the_training_split_size_is_read_from_the_spec(
    data: dict[str, Any], size: int | None
) -> None:
    assert train_size(parse_spec(data)) == size
