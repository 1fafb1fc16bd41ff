"""Dataset specs: a recipe's ``data`` field, the datasets the loaders of ``app.training.data``
serve, and the checks that keep them servable (kinds and options, paths inside the data roots).

Plain pydantic, no torch: the services check a recipe's data when a run is reported and when a
verification is requested, so a bad spec or a path outside the data roots is a 422 then, not a
failed job later.
"""

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

Pct = Annotated[float, Field(gt=0, lt=1)]
Share = Annotated[float, Field(ge=0, lt=1)]
Side = Annotated[int, Field(ge=8, le=1024)]
N_DIGITS = 1797  # images in scikit-learn's bundled digits


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_sizes(n: int, valid_pct: float) -> tuple[int, int]:
    """Training and validation sizes of ``n`` items split by ``valid_pct`` (as the loaders do)."""
    n_valid = max(1, round(n * valid_pct))
    return n - n_valid, n_valid


class DigitsSpec(Spec):
    """scikit-learn's bundled digits (1,797 real 8x8 images), upsampled.

    ``n_train`` keeps only that many images of the training split (the validation split stays
    whole, so the metric stays as precise); ``label_noise`` gives exactly that share of the
    training labels a wrong class (the validation labels are never touched). Both are chosen by
    ``split_seed``.
    """

    kind: Literal["digits"]
    image_size: Side = 32
    valid_pct: Pct = 0.2
    split_seed: int = 0
    n_train: Annotated[int, Field(ge=10)] | None = None
    label_noise: Share = 0.0

    @model_validator(mode="after")
    def _n_train_fits(self) -> "DigitsSpec":
        available, _ = split_sizes(N_DIGITS, self.valid_pct)
        if self.n_train is not None and self.n_train > available:
            raise ValueError(
                f"n_train: {self.n_train} is more than the {available} images of the training "
                f"split (valid_pct {self.valid_pct:g})"
            )
        return self


class RandomLabelsSpec(Spec):
    """Real digit images with shuffled labels: only memorisation can fit them."""

    kind: Literal["random_labels"]
    image_size: Side = 32
    n: Annotated[int, Field(ge=20, le=1797)] = 400
    valid_pct: Pct = 0.2
    split_seed: int = 0


class ShapesSpec(Spec):
    """Generated segmentation data (:mod:`app.training.shapes`): ``n`` images of 1 to
    ``max_shapes`` shapes on backgrounds of pixel noise ``noise`` (harder as it grows)."""

    kind: Literal["shapes"]
    n: Annotated[int, Field(ge=10, le=100_000)] = 600
    image_size: Side = 64
    valid_pct: Pct = 0.2
    seed: int = 0
    max_shapes: Annotated[int, Field(ge=1, le=8)] = 3
    noise: Annotated[float, Field(ge=0, le=2)] = 0.15


class FileSpec(Spec):
    """What every dataset read from files shares: where it is, the size its images are resized
    to, how it is split, and whether bad files stop it or are skipped (and counted)."""

    path: str = Field(min_length=1, description="Relative to one of ADVISOR_DATA_ROOTS.")
    image_size: Side = 64
    valid_pct: Pct = 0.2
    split_seed: int = 0
    skip_bad: bool = Field(
        default=False,
        description="Skip unreadable images, missing files and bad masks, counting them, "
        "rather than refusing the dataset.",
    )


class ImageFolderSpec(FileSpec):
    """Class-named subfolders (split by ``valid_pct``), or ``train/`` and ``valid/`` folders."""

    kind: Literal["image_folder"]


# A CSV column: its name, or its number counted from 0.
Column = str | int


class ImageCsvSpec(FileSpec):
    """fastai's ``ImageDataLoaders.from_csv``: a CSV (with a header row) of file names and
    labels. A column is named or counted from 0; ``valid_col`` is a boolean column that marks
    the validation rows (else ``valid_pct`` splits); ``label_delim`` splits a label cell into
    several labels (multi-label)."""

    kind: Literal["image_csv"]
    csv: str = Field(default="labels.csv", min_length=1)
    folder: str = Field(default="", description="Where the file names are, inside path.")
    suff: str = Field(default="", description="Appended to every file name (fastai's suff).")
    fn_col: Column = 0
    label_col: Column = 1
    valid_col: Column | None = None
    label_delim: str | None = Field(default=None, min_length=1)

    @field_validator("fn_col", "label_col", "valid_col")
    @classmethod
    def _column_number(cls, column: Column | None) -> Column | None:
        if isinstance(column, int) and column < 0:
            raise ValueError("a column's number counts from 0")
        return column


class SegmentationFolderSpec(FileSpec):
    """CamVid's layout: images, masks of the same name (plus ``mask_suffix``, CamVid's ``_P``),
    and ``codes``: one class name a line, the line's number (from 0) its pixel value."""

    kind: Literal["segmentation_folder"]
    images: str = Field(default="images", min_length=1)
    masks: str = Field(default="labels", min_length=1)
    codes: str = Field(default="codes.txt", min_length=1)
    mask_suffix: str = ""


DataSpec = Annotated[
    DigitsSpec
    | RandomLabelsSpec
    | ShapesSpec
    | ImageFolderSpec
    | ImageCsvSpec
    | SegmentationFolderSpec,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[DataSpec] = TypeAdapter(DataSpec)


class DataError(ValueError):
    """A dataset spec that cannot be served: ``field`` is the one to blame (``recipe.data.path``),
    ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def parse_spec(data: dict[str, Any] | None) -> DataSpec:
    if data is None:
        raise DataError("recipe.data", "the recipe names no dataset")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "value_error" and len(first["loc"]) <= 1:
            # A check across fields (a model validator) names its field in its message.
            message = str(first["ctx"]["error"]) if "ctx" in first else first["msg"]
            where, _, reason = message.partition(": ")
            raise DataError(f"recipe.data.{where}", reason) from exc
        where = ".".join(str(p) for p in first["loc"][1:] if p != data.get("kind")) or "kind"
        raise DataError(f"recipe.data.{where}", first["msg"]) from exc


def resolve_path(path: str, roots: Sequence[Path]) -> Path:
    """``path`` inside one of ``roots``, symlinks resolved; refused when it leads outside all."""
    if Path(path).is_absolute():
        raise DataError("recipe.data.path", f"'{path}' must be relative to a data root")
    for root in roots:
        candidate = (root / path).resolve()
        if candidate.is_relative_to(root.resolve()) and candidate.is_dir():
            return candidate
    if not roots:
        raise DataError("recipe.data.path", "no data roots are configured (ADVISOR_DATA_ROOTS)")
    raise DataError("recipe.data.path", f"'{path}' is not a folder inside the data roots")


# The image files a folder dataset lists (as image_folder always did: a new suffix would change
# what an existing recipe trains on).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
TRUE, FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


@dataclass(frozen=True)
class Item:
    """One example of a dataset read from files."""

    file: Path
    # A class index, the class indices of a multi-label row, or the mask file.
    target: int | tuple[int, ...] | Path
    # Who is to blame for this item's bad data, and how to name it: ``labels.csv line 7: 'a.jpg'``.
    field: str
    where: str
    # The side of a fixed split (train/valid folders, a valid_col); None: valid_pct decides.
    valid: bool | None = None


@dataclass
class Listing:
    """What a dataset read from files holds, before any image is opened."""

    items: list[Item]
    classes: list[str]  # class names, or a segmentation's codes (pixel value = index)
    task: str  # classification, multi_label or segmentation
    # "where: why" of each bad file skipped (skip_bad), here and when the images are decoded.
    skipped: list[str] = dataclasses.field(default_factory=list)

    def bad(self, spec: "FileSpec", field: str, where: str, why: str) -> None:
        """Refuse the dataset for a bad file, or skip and count it when the spec says so."""
        if not spec.skip_bad:
            raise DataError(field, f"{where}: {why}")
        self.skipped.append(f"{where}: {why}")


def _relative(file: Path, base: Path) -> str:
    return f"'{file.relative_to(base)}'" if file.is_relative_to(base) else f"'{file}'"


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def _list_folder(spec: ImageFolderSpec, base: Path) -> Listing:
    fixed = (base / "train").is_dir() and (base / "valid").is_dir()
    top = base / "train" if fixed else base
    classes = sorted(p.name for p in top.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError("recipe.data.path", f"'{spec.path}' needs at least two class folders")
    items: list[Item] = []
    for label, name in enumerate(classes):
        files = _images_in(top / name)
        if not files:
            raise DataError(
                "recipe.data.path", f"{_relative(top / name, base)}: the class holds no images"
            )
        sides = [(files, False if fixed else None)]
        if fixed and (base / "valid" / name).is_dir():
            sides.append((_images_in(base / "valid" / name), True))
        items += [
            Item(f, label, "recipe.data.path", _relative(f, base), valid)
            for side, valid in sides
            for f in side
        ]
    if fixed and not any(i.valid for i in items):
        raise DataError("recipe.data.path", f"'{spec.path}/valid' holds no images of the classes")
    return Listing(items, classes, "classification")


def _column(spec: ImageCsvSpec, option: str, header: list[str]) -> int:
    wanted = getattr(spec, option)
    if isinstance(wanted, int):
        if wanted < len(header):
            return wanted
        problem = f"has {len(header)} columns, no column {wanted}"
    elif wanted in header:
        return header.index(wanted)
    else:
        problem = f"has no column '{wanted}'"
    raise DataError(
        f"recipe.data.{option}", f"{spec.csv} {problem} (its columns: {', '.join(header)})"
    )


def _list_csv(spec: ImageCsvSpec, base: Path) -> Listing:
    table = (base / spec.csv).resolve()
    if not table.is_relative_to(base) or not table.is_file():
        raise DataError("recipe.data.csv", f"'{spec.csv}' is not a file in '{spec.path}'")
    try:
        with table.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError("recipe.data.csv", f"{spec.csv} is not a readable CSV: {exc}") from exc
    if len(rows) < 2:
        raise DataError("recipe.data.csv", f"{spec.csv} has no rows under its header")
    header = [name.strip() for name in rows[0]]
    fn, lab = _column(spec, "fn_col", header), _column(spec, "label_col", header)
    val = None if spec.valid_col is None else _column(spec, "valid_col", header)
    listing = Listing([], [], "classification" if spec.label_delim is None else "multi_label")
    labelled: list[tuple[Path, list[str], str, bool | None]] = []
    folder = base / spec.folder
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line, as CSV writers leave at the end
        where = f"{spec.csv} line {line}"
        if len(row) != len(header):
            raise DataError(
                "recipe.data.csv", f"{where}: {len(row)} cells, the header names {len(header)}"
            )
        name = row[fn].strip()
        file = (folder / f"{name}{spec.suff}").resolve()
        if not name or not file.is_relative_to(base):
            raise DataError(
                "recipe.data.csv", f"{where}: '{name}' is not a file inside '{spec.path}'"
            )
        if not file.is_file():
            listing.bad(spec, "recipe.data.csv", where, f"'{name}{spec.suff}' does not exist")
            continue
        cell = row[lab].strip()
        labels = [cell] if spec.label_delim is None else cell.split(spec.label_delim)
        labels = [label.strip() for label in labels if label.strip()]
        if spec.label_delim is None and not labels:
            raise DataError("recipe.data.csv", f"{where}: '{name}' has no label")
        valid = None
        if val is not None:
            flag = row[val].strip().lower()
            if flag not in TRUE | FALSE:
                raise DataError(
                    "recipe.data.valid_col", f"{where}: '{row[val]}' is not true or false"
                )
            valid = flag in TRUE
        labelled.append((file, labels, f"{where}: '{name}'", valid))
    listing.classes = sorted({label for _, labels, _, _ in labelled for label in labels})
    if len(listing.classes) < 2:
        raise DataError("recipe.data.label_col", f"{spec.csv} needs at least two labels")
    index = {name: i for i, name in enumerate(listing.classes)}
    for file, labels, where, valid in labelled:
        target: int | tuple[int, ...] = (
            index[labels[0]]
            if spec.label_delim is None
            else tuple(sorted({index[label] for label in labels}))
        )
        listing.items.append(Item(file, target, "recipe.data.csv", where, valid))
    if val is not None and (
        all(i.valid for i in listing.items) or not any(i.valid for i in listing.items)
    ):
        raise DataError(
            "recipe.data.valid_col", f"{spec.csv} needs rows on both sides of '{spec.valid_col}'"
        )
    return listing


def _list_segmentation(spec: SegmentationFolderSpec, base: Path) -> Listing:
    def inside(option: str, *, folder: bool) -> Path:
        name: str = getattr(spec, option)
        found = (base / name).resolve()
        if found.is_relative_to(base) and (found.is_dir() if folder else found.is_file()):
            return found
        what = "folder" if folder else "file"
        raise DataError(f"recipe.data.{option}", f"'{name}' is not a {what} in '{spec.path}'")

    images, masks, codes = (
        inside("images", folder=True),
        inside("masks", folder=True),
        inside("codes", folder=False),
    )
    names = codes.read_text(encoding="utf-8").rstrip().splitlines()
    for line, name in enumerate(names, start=1):
        if not name.strip():
            raise DataError("recipe.data.codes", f"{spec.codes} line {line} is empty")
    if len(names) < 2:
        raise DataError("recipe.data.codes", f"{spec.codes} needs at least two classes")
    listing = Listing([], [n.strip() for n in names], "segmentation")
    files = _images_in(images)
    if not files:
        raise DataError("recipe.data.images", f"'{spec.images}' holds no images")
    by_stem = {f.stem: f for f in masks.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
    for file in files:
        mask = by_stem.get(f"{file.stem}{spec.mask_suffix}")
        if mask is None:
            listing.bad(
                spec,
                "recipe.data.masks",
                _relative(file, base),
                f"no mask '{file.stem}{spec.mask_suffix}.*' in '{spec.masks}'",
            )
            continue
        listing.items.append(Item(file, mask, "recipe.data.images", _relative(file, base)))
    return listing


def list_files(spec: FileSpec, roots: Sequence[Path]) -> Listing:
    """The examples of a dataset read from files, checked as far as that goes without opening
    an image: folders and the CSV's columns exist, every named file exists inside the data
    roots, no class is empty. Bad files are refused, or skipped with ``skip_bad``."""
    base = resolve_path(spec.path, roots)
    if isinstance(spec, ImageCsvSpec):
        listing = _list_csv(spec, base)
    elif isinstance(spec, SegmentationFolderSpec):
        listing = _list_segmentation(spec, base)
    else:
        assert isinstance(spec, ImageFolderSpec)
        listing = _list_folder(spec, base)
    if not listing.items:
        raise DataError("recipe.data.path", f"'{spec.path}' holds no usable images")
    return listing


def check_spec(data: dict[str, Any] | None, roots: Sequence[Path]) -> DataSpec:
    """Validate a recipe's dataset spec and, for data read from files, list it (see
    :func:`list_files`; decoding the images is the loader's part, before training)."""
    spec = parse_spec(data)
    if isinstance(spec, FileSpec):
        list_files(spec, roots)
    return spec


def task_of(data: dict[str, Any]) -> str | None:
    """The task a dataset spec (as a recipe keeps it) can only serve, where the spec says:
    masks are segmentation, labels split by a delimiter multi-label."""
    if data.get("kind") == "segmentation_folder":
        return "segmentation"
    if data.get("kind") == "image_csv" and data.get("label_delim") is not None:
        return "multi_label"
    return None


def train_size(spec: DataSpec) -> int | None:
    """Images in the spec's training split; None for data read from files (only they tell)."""
    if isinstance(spec, FileSpec):
        return None
    if isinstance(spec, DigitsSpec):
        if spec.n_train is not None:
            return spec.n_train
        return split_sizes(N_DIGITS, spec.valid_pct)[0]
    return split_sizes(spec.n, spec.valid_pct)[0]
