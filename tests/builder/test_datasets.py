"""Dataset specs and their checks, without torch: kinds and options name the field to blame,
paths stay inside the data roots, files are listed (CSV columns and rows, class folders,
segmentation codes and masks) naming the file and the line, and the training split's size is
known from the spec."""

from pathlib import Path
from typing import Any

import pytest

from app.builder.datasets import (
    DataError,
    DigitsSpec,
    ImageCsvSpec,
    SegmentationFolderSpec,
    check_spec,
    list_files,
    parse_spec,
    train_size,
)
from app.builder.recipe import Recipe
from tests.builder.data_folders import (
    image_csv,
    image_folder,
    segmentation_folder,
    write_csv,
)


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
        ({"kind": "image_csv"}, "recipe.data.path"),
        ({"kind": "image_csv", "path": "p", "label_delim": ""}, "recipe.data.label_delim"),
        ({"kind": "image_csv", "path": "p", "fn_col": -1}, "recipe.data.fn_col"),
        ({"kind": "segmentation_folder", "path": "p", "masks": ""}, "recipe.data.masks"),
        ({"kind": "segmentation_folder", "path": "p", "skip_bad": "maybe"}, "recipe.data.skip_bad"),
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
    """A data root holding ``pets`` (class folders ``cat`` and ``dog``) and ``escape``, a
    symlink out of it."""
    root = tmp_path / "root"
    image_folder(root, "pets", per_class=2)
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
        ({"kind": "image_csv", "path": "pets"}, None),
    ],
)
def test_the_training_split_size_is_read_from_the_spec(
    data: dict[str, Any], size: int | None
) -> None:
    assert train_size(parse_spec(data)) == size


def refused(data: dict[str, Any], root: Path) -> DataError:
    with pytest.raises(DataError) as err:
        check_spec(data, [root])
    return err.value


def test_an_empty_class_folder_is_refused(root: Path) -> None:
    (root / "pets" / "owl").mkdir()
    err = refused({"kind": "image_folder", "path": "pets"}, root)
    assert (err.field, err.reason) == ("recipe.data.path", "'owl': the class holds no images")
    # Not a file to skip: skip_bad does not hide it.
    err = refused({"kind": "image_folder", "path": "pets", "skip_bad": True}, root)
    assert err.reason == "'owl': the class holds no images"


def test_a_csv_is_listed_with_its_classes_and_split(root: Path) -> None:
    image_csv(root, "csvpets", n=8, valid_col=True)
    spec = check_spec({"kind": "image_csv", "path": "csvpets", "folder": "images",
                       "valid_col": "is_valid"}, [root])  # fmt: skip
    assert isinstance(spec, ImageCsvSpec)
    listing = list_files(spec, [root])
    assert listing.classes == ["cat", "dog"] and listing.task == "classification"
    assert [i.target for i in listing.items] == [0, 1] * 4
    assert [i.valid for i in listing.items] == [n % 4 == 0 for n in range(8)]
    assert listing.items[2].where == "labels.csv line 4: '2.png'"


def test_multi_label_rows_list_every_label(root: Path) -> None:
    image_csv(root, "multi", n=7, multi=True)
    spec = parse_spec({"kind": "image_csv", "path": "multi", "folder": "images",
                       "label_delim": " "})  # fmt: skip
    assert isinstance(spec, ImageCsvSpec)
    listing = list_files(spec, [root])
    assert listing.task == "multi_label" and listing.classes == ["blue", "green", "red"]
    # Row 7 (i = 5) lights green and blue; row 2 (i = 0) red.
    assert listing.items[5].target == (0, 1) and listing.items[0].target == (2,)


CSV_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no such label column", {"label_col": "tags"}, "recipe.data.label_col",
     "labels.csv has no column 'tags' (its columns: fname, labels)"),
    ("no such file column", {"fn_col": 5}, "recipe.data.fn_col",
     "labels.csv has 2 columns, no column 5 (its columns: fname, labels)"),
    ("no such valid column", {"valid_col": "is_valid"}, "recipe.data.valid_col",
     "labels.csv has no column 'is_valid' (its columns: fname, labels)"),
    ("no such csv", {"csv": "train.csv"}, "recipe.data.csv",
     "'train.csv' is not a file in 'csvpets'"),
    ("a csv outside", {"csv": "../../escape.csv"}, "recipe.data.csv",
     "'../../escape.csv' is not a file in 'csvpets'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "options", "field", "reason"), CSV_CASES,
                         ids=[c[0] for c in CSV_CASES])  # fmt: skip
def test_a_csv_without_the_named_column_is_refused_naming_it(
    root: Path, case: str, options: dict[str, Any], field: str, reason: str
) -> None:
    image_csv(root, "csvpets", n=4)
    err = refused({"kind": "image_csv", "path": "csvpets", "folder": "images", **options}, root)
    assert (err.field, err.reason) == (field, reason)


def test_a_csv_row_naming_a_missing_file_is_refused_or_skipped(root: Path) -> None:
    folder = image_csv(root, "csvpets", n=6)
    (folder / "images" / "3.png").unlink()
    data = {"kind": "image_csv", "path": "csvpets", "folder": "images"}
    err = refused(data, root)
    assert (err.field, err.reason) == (
        "recipe.data.csv",
        "labels.csv line 5: '3.png' does not exist",
    )
    spec = check_spec({**data, "skip_bad": True}, [root])
    assert isinstance(spec, ImageCsvSpec)
    listing = list_files(spec, [root])
    assert len(listing.items) == 5
    assert listing.skipped == ["labels.csv line 5: '3.png' does not exist"]


def test_csv_rows_that_cannot_be_read_name_their_line(root: Path) -> None:
    folder = image_csv(root, "csvpets", n=4)
    data = {"kind": "image_csv", "path": "csvpets", "folder": "images"}
    write_csv(
        folder / "labels.csv", ["fname", "labels"], [["0.png", "cat"], ["../../x.png", "dog"]]
    )
    err = refused(data, root)
    assert err.reason == "labels.csv line 3: '../../x.png' is not a file inside 'csvpets'"
    write_csv(folder / "labels.csv", ["fname", "labels"], [["0.png", "cat"], ["1.png", ""]])
    assert refused(data, root).reason == "labels.csv line 3: '1.png' has no label"
    write_csv(folder / "labels.csv", ["fname", "labels", "v"], [["0.png", "cat", "maybe"]])
    err = refused({**data, "valid_col": "v"}, root)
    assert (err.field, err.reason) == (
        "recipe.data.valid_col", "labels.csv line 2: 'maybe' is not true or false"
    )  # fmt: skip


def test_a_segmentation_folder_is_listed_with_its_codes_and_masks(root: Path) -> None:
    segmentation_folder(root, "camvid", n=3)
    spec = check_spec({"kind": "segmentation_folder", "path": "camvid", "mask_suffix": "_P"},
                      [root])  # fmt: skip
    assert isinstance(spec, SegmentationFolderSpec)
    listing = list_files(spec, [root])
    assert listing.classes == ["Void", "Square"] and listing.task == "segmentation"
    assert [i.target.name for i in listing.items] == ["0_P.png", "1_P.png", "2_P.png"]  # type: ignore[union-attr]


def test_segmentation_folders_name_what_is_missing(root: Path) -> None:
    folder = segmentation_folder(root, "camvid", n=3)
    data = {"kind": "segmentation_folder", "path": "camvid", "mask_suffix": "_P"}
    err = refused({**data, "mask_suffix": ""}, root)
    assert (err.field, err.reason) == (
        "recipe.data.masks", "'images/0.png': no mask '0.*' in 'labels'"
    )  # fmt: skip
    err = refused({**data, "codes": "classes.txt"}, root)
    assert (err.field, err.reason) == (
        "recipe.data.codes", "'classes.txt' is not a file in 'camvid'"
    )  # fmt: skip
    err = refused({**data, "images": "../escape"}, root)
    assert (err.field, err.reason) == (
        "recipe.data.images", "'../escape' is not a folder in 'camvid'"
    )  # fmt: skip
    (folder / "codes.txt").write_text("Void\n\nSquare\n")
    err = refused(data, root)
    assert (err.field, err.reason) == ("recipe.data.codes", "codes.txt line 2 is empty")
    (folder / "codes.txt").write_text("Void\nSquare\n")
    (folder / "labels" / "1_P.png").unlink()
    spec = check_spec({**data, "skip_bad": True}, [root])
    assert isinstance(spec, SegmentationFolderSpec)
    assert list_files(spec, [root]).skipped == ["'images/1.png': no mask '1_P.*' in 'labels'"]


def test_paths_of_every_kind_stay_inside_the_data_roots(root: Path) -> None:
    for kind in ("image_csv", "segmentation_folder"):
        err = refused({"kind": kind, "path": "escape"}, root)
        assert (err.field, err.reason) == (
            "recipe.data.path", "'escape' is not a folder inside the data roots"
        )  # fmt: skip


def test_the_task_follows_the_data_and_old_recipes_keep_their_fingerprints() -> None:
    multi = {"kind": "image_csv", "path": "p", "label_delim": " "}
    assert Recipe(arch="resnet18", data=multi).task == "multi_label"
    seg = {"kind": "segmentation_folder", "path": "p"}
    assert Recipe(arch="resnet18", data=seg).task == "segmentation"
    assert Recipe(arch="resnet18", data={"kind": "image_csv", "path": "p"}).task == "classification"
    with pytest.raises(ValueError, match="task: this dataset serves 'multi_label', not"):
        Recipe(arch="resnet18", task="classification", data=multi)
    with pytest.raises(ValueError, match="task: multi_label needs an image_csv dataset"):
        Recipe(arch="resnet18", task="multi_label", data={"kind": "digits"})
    # Recipes made before these kinds: the same canonical JSON, so the same stored trials.
    # (The fingerprints computed by the code before them.)
    old = Recipe(arch="simple_cnn_small", data={"kind": "image_folder", "path": "pets"})
    assert old.fingerprint() == "60655ce2cb03bca017f1aadbf67896ce3cc8e3551a4d19c29e62c4a2e53a3d15"
    digits = Recipe(arch="simple_cnn_small", head={"ps": 0.0, "lin_ftrs": [32]}, epochs=3,
                    data={"kind": "digits", "image_size": 16})  # fmt: skip
    assert digits.fingerprint() == (
        "75b762106a47eadaa242daa29097d368628c0c04a8eb92bee43cd9307b8fee2a"
    )
