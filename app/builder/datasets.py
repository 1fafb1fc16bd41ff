"""Dataset specs: a recipe's ``data`` field, the datasets the loaders of ``app.training.data``
serve, and the checks that keep them servable (kinds and options, paths inside the data roots).

Plain pydantic, no torch: the services check a recipe's data when a run is reported and when a
verification is requested, so a bad spec or a path outside the data roots is a 422 then, not a
failed job later.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

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


class ImageFolderSpec(Spec):
    """Class-named subfolders (split by ``valid_pct``), or ``train/`` and ``valid/`` folders."""

    kind: Literal["image_folder"]
    path: str = Field(min_length=1, description="Relative to one of ADVISOR_DATA_ROOTS.")
    image_size: Side = 64
    valid_pct: Pct = 0.2
    split_seed: int = 0


DataSpec = Annotated[
    DigitsSpec | RandomLabelsSpec | ShapesSpec | ImageFolderSpec, Field(discriminator="kind")
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


def check_spec(data: dict[str, Any] | None, roots: Sequence[Path]) -> DataSpec:
    """Validate a recipe's dataset spec, its path against ``roots``, without loading anything."""
    spec = parse_spec(data)
    if isinstance(spec, ImageFolderSpec):
        resolve_path(spec.path, roots)
    return spec


def train_size(spec: DataSpec) -> int | None:
    """Images in the spec's training split; None for an image folder (only its files tell)."""
    if isinstance(spec, ImageFolderSpec):
        return None
    if isinstance(spec, DigitsSpec):
        if spec.n_train is not None:
            return spec.n_train
        return split_sizes(N_DIGITS, spec.valid_pct)[0]
    return split_sizes(spec.n, spec.valid_pct)[0]
