"""Dataset specs (a recipe's ``data`` field) and loading them as tensors.

Specs are plain pydantic models, validated when a verification is requested, so a bad spec or a
path outside the data roots is a 4xx then, not a failed job later. Loading imports torch.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Pct = Annotated[float, Field(gt=0, lt=1)]
Share = Annotated[float, Field(ge=0, lt=1)]
Side = Annotated[int, Field(ge=8, le=1024)]
N_DIGITS = 1797  # images in scikit-learn's bundled digits


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_sizes(n: int, valid_pct: float) -> tuple[int, int]:
    """Training and validation sizes of ``n`` items split by ``valid_pct`` (as ``load`` does)."""
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
    """A dataset spec that cannot be served; the message names the field."""


def parse_spec(data: dict[str, Any] | None) -> DataSpec:
    if data is None:
        raise DataError("recipe.data: the recipe names no dataset")
    from pydantic import ValidationError

    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "value_error" and len(first["loc"]) <= 1:
            # A check across fields (a model validator) names its field in its message.
            message = str(first["ctx"]["error"]) if "ctx" in first else first["msg"]
            raise DataError(f"recipe.data.{message}") from exc
        where = ".".join(str(p) for p in first["loc"][1:] if p != data.get("kind")) or "kind"
        raise DataError(f"recipe.data.{where}: {first['msg']}") from exc


def resolve_path(path: str, roots: Sequence[Path]) -> Path:
    """``path`` inside one of ``roots``, symlinks resolved; refused when it leads outside all."""
    if Path(path).is_absolute():
        raise DataError(f"recipe.data.path: '{path}' must be relative to a data root")
    for root in roots:
        candidate = (root / path).resolve()
        if candidate.is_relative_to(root.resolve()) and candidate.is_dir():
            return candidate
    if not roots:
        raise DataError("recipe.data.path: no data roots are configured (ADVISOR_DATA_ROOTS)")
    raise DataError(f"recipe.data.path: '{path}' is not a folder inside the data roots")


def check_spec(data: dict[str, Any] | None, roots: Sequence[Path]) -> DataSpec:
    """Validate a recipe's dataset spec without loading anything."""
    spec = parse_spec(data)
    if isinstance(spec, ImageFolderSpec):
        resolve_path(spec.path, roots)
    return spec


@dataclass
class Split:
    """Tensors of one dataset: images [N, C, H, W] float, targets [N] (or [N, H, W]) int64."""

    train_x: Any
    train_y: Any
    valid_x: Any
    valid_y: Any
    n_out: int
    task: str


def load(spec: DataSpec, roots: Sequence[Path], *, fraction: float = 1.0, seed: int = 0) -> Split:
    """Load ``spec``; ``fraction`` keeps a subset of the training split, chosen by ``seed``."""
    import torch

    split = _load(spec, roots)
    if fraction < 1.0:
        keep = max(1, round(len(split.train_x) * fraction))
        idx = torch.randperm(len(split.train_x), generator=torch.Generator().manual_seed(seed))[
            :keep
        ]
        split.train_x, split.train_y = split.train_x[idx], split.train_y[idx]
    return split


def _split_indices(n: int, valid_pct: float, seed: int) -> tuple[Any, Any]:
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut, _ = split_sizes(n, valid_pct)
    return order[:cut], order[cut:]


_NOISE_SEED = 0x5EED_0F_0015E


def wrong_labels(y: Any, share: float, n_classes: int, seed: int) -> Any:
    """A copy of ``y`` in which exactly ``round(share * len(y))`` labels, chosen by ``seed``,
    are replaced by a different class (uniform among the others)."""
    import torch

    y = y.clone()
    count = round(share * len(y))
    if count == 0:
        return y
    # Not ``randperm`` with ``seed`` itself: the split and ``load``'s fraction draw that very
    # permutation, and a fraction of the training split would then be all wrong labels.
    g = torch.Generator().manual_seed(_NOISE_SEED + seed)
    picked = torch.rand(len(y), generator=g).argsort()[:count]
    # An offset in 1..n_classes-1 never maps a class onto itself.
    offset = torch.randint(1, n_classes, (count,), generator=g)
    y[picked] = (y[picked] + offset) % n_classes
    return y


def _digits(image_size: int) -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F  # noqa: N812
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = ((x - 0.3) / 0.4).repeat(1, 3, 1, 1)
    return x, torch.tensor(digits.target, dtype=torch.int64)


def _load(spec: DataSpec, roots: Sequence[Path]) -> Split:
    import torch

    if isinstance(spec, DigitsSpec):
        x, y = _digits(spec.image_size)
        train, valid = _split_indices(len(x), spec.valid_pct, spec.split_seed)
        if spec.n_train is not None:
            # The split's order is already a seeded shuffle: its head is a random subset.
            train = train[: spec.n_train]
        train_y = y[train]
        if spec.label_noise:
            train_y = wrong_labels(train_y, spec.label_noise, 10, spec.split_seed)
        return Split(x[train], train_y, x[valid], y[valid], 10, "classification")
    if isinstance(spec, RandomLabelsSpec):
        x, y = _digits(spec.image_size)
        g = torch.Generator().manual_seed(spec.split_seed)
        pick = torch.randperm(len(x), generator=g)[: spec.n]
        x, y = x[pick], y[pick][torch.randperm(spec.n, generator=g)]
        train, valid = _split_indices(spec.n, spec.valid_pct, spec.split_seed)
        return Split(x[train], y[train], x[valid], y[valid], 10, "classification")
    if isinstance(spec, ShapesSpec):
        from app.training.shapes import SHAPE_CLASSES, make_shapes

        x, y = make_shapes(
            spec.n, spec.image_size, seed=spec.seed, max_shapes=spec.max_shapes, noise=spec.noise
        )
        train, valid = _split_indices(spec.n, spec.valid_pct, spec.seed)
        return Split(x[train], y[train], x[valid], y[valid], len(SHAPE_CLASSES), "segmentation")
    return _image_folder(spec, resolve_path(spec.path, roots))


def _read_images(files: Sequence[Path], size: int) -> Any:
    import torch
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor, resize

    images = []
    for f in files:
        with Image.open(f) as im:
            t = pil_to_tensor(im.convert("RGB"))
        images.append(resize(t, [size, size], antialias=True))
    return (torch.stack(images).float() / 255.0 - 0.45) / 0.25


def _image_folder(spec: ImageFolderSpec, root: Path) -> Split:
    import torch

    def classes_in(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if p.is_dir())

    def files_of(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
        files, labels = [], []
        for label, name in enumerate(classes):
            for f in sorted((folder / name).iterdir()):
                if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}:
                    files.append(f)
                    labels.append(label)
        return files, labels

    if (root / "train").is_dir() and (root / "valid").is_dir():
        classes = classes_in(root / "train")
        tf, tl = files_of(root / "train", classes)
        vf, vl = files_of(root / "valid", classes)
    else:
        classes = classes_in(root)
        files, labels = files_of(root, classes)
        train, valid = _split_indices(len(files), spec.valid_pct, spec.split_seed)
        tf, tl = [files[i] for i in train], [labels[i] for i in train]
        vf, vl = [files[i] for i in valid], [labels[i] for i in valid]
    if len(classes) < 2 or not tf or not vf:
        raise DataError(
            f"recipe.data.path: '{spec.path}' needs at least two class folders of images"
        )
    return Split(
        _read_images(tf, spec.image_size),
        torch.tensor(tl),
        _read_images(vf, spec.image_size),
        torch.tensor(vl),
        len(classes),
        "classification",
    )
