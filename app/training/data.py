"""Loading a recipe's dataset as tensors. Loading imports torch; the specs and their checks
(:mod:`app.builder.datasets`) do not."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.builder.datasets import (
    DataError,
    DataSpec,
    DigitsSpec,
    ImageFolderSpec,
    RandomLabelsSpec,
    ShapesSpec,
    resolve_path,
    split_sizes,
)


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
            "recipe.data.path", f"'{spec.path}' needs at least two class folders of images"
        )
    return Split(
        _read_images(tf, spec.image_size),
        torch.tensor(tl),
        _read_images(vf, spec.image_size),
        torch.tensor(vl),
        len(classes),
        "classification",
    )
