"""Loading a recipe's dataset. Loading imports torch; the specs and their checks
(:mod:`app.builder.datasets`) do not.

Bundled and generated data (digits, shapes) load as float tensors, as they always did. Data read
from files (image folders, CSVs, segmentation folders) loads as :class:`Images`: every image is
decoded once before training, which checks it (a bad file is refused, naming it, or skipped with
``skip_bad``) and resizes it to the recipe's size. What that pass decodes is kept as uint8, never
float32: in memory while it fits ``ADVISOR_DATA_CACHE_MB``, else in an on-disk cache read one
record per image (a ``pread``, so the pages stay the kernel's cache, not the process's memory),
else decoded again each epoch. Batches are then read by DataLoader worker processes, and
normalised and augmented on the device (:mod:`app.training.augment`).
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from app.builder.datasets import (
    DataError,
    DataSpec,
    DigitsSpec,
    FileSpec,
    Item,
    Listing,
    RandomLabelsSpec,
    ShapesSpec,
    list_files,
    split_sizes,
)

log = logging.getLogger(__name__)

# Images read from files are normalised with these (as image_folder always was).
MEAN, STD = 0.45, 0.25
# Below this many images, starting worker processes costs more than decoding in this one.
MIN_FOR_WORKERS = 1000


def cache_budget_bytes() -> int:
    """``ADVISOR_DATA_CACHE_MB`` (app.settings declares and documents it). Read here, from the
    environment, because the training part may not import the settings (tests/test_layers.py)
    and the worker hands the loader only its data roots."""
    return int(float(os.environ.get("ADVISOR_DATA_CACHE_MB", "512")) * 2**20)


def cache_dir() -> Path:
    """``ADVISOR_DATA_CACHE_DIR``: where resized images are cached when they exceed the budget."""
    configured = os.environ.get("ADVISOR_DATA_CACHE_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "advisor-data-cache"


def data_workers() -> int:
    """``ADVISOR_DATA_WORKERS``: DataLoader worker processes decoding images (default: the
    cores, at most 4)."""
    configured = os.environ.get("ADVISOR_DATA_WORKERS")
    return int(configured) if configured else min(4, os.cpu_count() or 1)


@dataclass
class Split:
    """One dataset's splits. Bundled and generated data: images [N, C, H, W] float, targets [N]
    (or [N, H, W]) int64. Data read from files: :class:`Images`, with their targets beside them
    (``Images.labels``; the mask files for a segmentation)."""

    train_x: Any
    train_y: Any
    valid_x: Any
    valid_y: Any
    n_out: int
    task: str
    # "where: why" of each bad file skipped (a spec's skip_bad).
    skipped: list[str] = dataclasses.field(default_factory=list)


def load(spec: DataSpec, roots: Sequence[Path], *, fraction: float = 1.0, seed: int = 0) -> Split:
    """Load ``spec``; ``fraction`` keeps a subset of the training split, chosen by ``seed``."""
    split = _load(spec, roots)
    if fraction < 1.0:
        keep = max(1, round(len(split.train_x) * fraction))
        idx = torch.randperm(len(split.train_x), generator=torch.Generator().manual_seed(seed))[
            :keep
        ]
        if isinstance(split.train_x, Images):
            split.train_x = split.train_x.subset(idx)
            split.train_y = split.train_x.targets
        else:
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
    return _from_files(spec, roots)


# --- data read from files ----------------------------------------------------------------------

# A bad item, as the decode pass finds it: (field, where, why).
Bad = tuple[str, str, str]


def decode_image(file: Path, size: int) -> torch.Tensor:
    """``file`` as uint8 [3, size, size] (antialiased, as image_folder always resized)."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor, resize

    with Image.open(file) as im:
        t = pil_to_tensor(im.convert("RGB"))
    resized: torch.Tensor = resize(t, [size, size], antialias=True)
    return resized


def decode_mask(mask: Path, image: Path, n_codes: int, size: int) -> torch.Tensor | str:
    """The mask of ``image`` as uint8 [size, size] (nearest, so classes stay classes), or why
    it is bad: not the image's size, or a pixel value that ``codes`` does not name."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms.v2.functional import InterpolationMode, resize

    with Image.open(image) as im:
        wanted = im.size
    with Image.open(mask) as m:
        if m.size != wanted:
            return (
                f"its mask '{mask.name}' is {m.size[0]}x{m.size[1]}, the image "
                f"{wanted[0]}x{wanted[1]}"
            )
        if m.mode not in ("L", "P", "I", "I;16"):
            return f"its mask '{mask.name}' is {m.mode}, not one channel of class values"
        values = np.asarray(m)
    top = int(values.max())
    if top >= n_codes:
        return (
            f"its mask '{mask.name}' has pixel value {top}, outside the codes (0 to {n_codes - 1})"
        )
    t = torch.from_numpy(values.astype(np.uint8))[None]
    resized: torch.Tensor = resize(t, [size, size], interpolation=InterpolationMode.NEAREST)
    return resized[0]


class _Decode(Dataset[tuple[Any, ...]]):
    """The decode pass over a listing's items: (image, mask or None), or the item's Bad,
    returned rather than raised (a worker's exception reaches the parent only as text)."""

    def __init__(self, items: Sequence[Item], size: int, n_codes: int) -> None:
        self.items, self.size, self.n_codes = items, size, n_codes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        item = self.items[i]
        try:
            image = decode_image(item.file, self.size)
        except Exception as exc:  # PIL raises many kinds for a bad file; each is the file's fault
            return ("bad", item.field, item.where, f"not a readable image ({exc})")
        if not isinstance(item.target, Path):
            return ("ok", image, None)
        try:
            mask = decode_mask(item.target, item.file, self.n_codes, self.size)
        except Exception as exc:
            return ("bad", "recipe.data.masks", item.where, f"unreadable mask ({exc})")
        if isinstance(mask, str):
            field = "recipe.data.codes" if "outside the codes" in mask else "recipe.data.masks"
            return ("bad", field, item.where, mask)
        return ("ok", image, mask)


def _decoded(items: Sequence[Item], size: int, n_codes: int) -> Iterator[tuple[Any, ...]]:
    """Every item decoded once, in order, by worker processes when there are enough."""
    workers = data_workers() if len(items) >= MIN_FOR_WORKERS else 0
    yield from DataLoader(
        _Decode(items, size, n_codes),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=8 if workers else None,
    )


class _Cache:
    """Resized uint8 images (and masks) on disk, one fixed-size record per item: written once by
    the decode pass, read one record at a time (``os.pread``: no mapping, so reading an epoch
    grows the page cache, not this process's memory)."""

    def __init__(self, path: Path, size: int, masks: bool) -> None:
        self.path, self.size, self.masks = path, size, masks
        self.image_bytes = 3 * size * size
        self.record = self.image_bytes + (size * size if masks else 0)
        self._fd: tuple[int, int] | None = None  # (pid, fd): a forked worker opens its own

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}

    def read(self, row: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.path, os.O_RDONLY))
        raw = bytearray(os.pread(self._fd[1], self.record, row * self.record))
        flat = torch.frombuffer(raw, dtype=torch.uint8)
        image = flat[: self.image_bytes].view(3, self.size, self.size)
        mask = flat[self.image_bytes :].view(self.size, self.size) if self.masks else None
        return image, mask


class Images(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images read from files and their targets, served as uint8 [3, S, S] (a batch: normalised
    on the device, :func:`normalize`). The pixels are in memory (``pixels``), in an on-disk
    cache, or decoded from the files each time; ``rows`` says which of them are this set's."""

    def __init__(
        self,
        items: Sequence[Item],
        rows: torch.Tensor,
        *,
        size: int,
        task: str,
        n_classes: int,
        pixels: tuple[torch.Tensor, torch.Tensor | None] | None = None,
        cache: _Cache | None = None,
    ) -> None:
        self.items, self.rows, self.size, self.task = items, rows, size, task
        self.n_classes, self.pixels, self.cache = n_classes, pixels, cache
        picked = [items[i].target for i in rows.tolist()]
        if task == "classification":
            self.labels: torch.Tensor | None = torch.tensor(picked, dtype=torch.int64)
        elif task == "multi_label":
            self.labels = torch.zeros(len(picked), n_classes)
            for i, classes in enumerate(picked):
                self.labels[i, list(classes)] = 1.0
        else:
            self.labels = None

    @property
    def targets(self) -> Any:
        """The labels, or the mask files of a segmentation."""
        if self.labels is not None:
            return self.labels
        return [self.items[i].target for i in self.rows.tolist()]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, idx: torch.Tensor) -> "Images":
        return Images(
            self.items,
            self.rows[idx],
            size=self.size,
            task=self.task,
            n_classes=self.n_classes,
            pixels=self.pixels,
            cache=self.cache,
        )

    def _target(self, i: int, mask: torch.Tensor | None) -> torch.Tensor:
        if self.labels is not None:
            return self.labels[i]
        assert mask is not None
        return mask.long()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.rows[i])
        if self.cache is not None:
            image, mask = self.cache.read(row)
        else:
            item = self.items[row]
            image, mask = decode_image(item.file, self.size), None
            if isinstance(item.target, Path):
                decoded = decode_mask(item.target, item.file, self.n_classes, self.size)
                if isinstance(decoded, str):
                    raise ValueError(f"{item.where}: {decoded}")  # changed since checked
                mask = decoded
        return image, self._target(i, mask)

    def fetch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch straight from memory (the pixels must be there)."""
        assert self.pixels is not None
        images, masks = self.pixels
        rows = self.rows[idx]
        if self.labels is not None:
            return images[rows], self.labels[idx]
        assert masks is not None
        return images[rows], masks[rows].long()

    def batches(self, *, pin: bool) -> Callable[[Sequence[torch.Tensor]], Iterator[Any]]:
        """A reader of batches (each a tensor of positions): from memory in this process, else
        through DataLoader workers that stay up for every call (an epoch each)."""
        if self.pixels is not None:
            return lambda chunks: (self.fetch(idx) for idx in chunks)
        sampler = _Chunks()
        workers = data_workers() if len(self) >= MIN_FOR_WORKERS else 0
        loader = DataLoader(
            self,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None,
        )

        def read(chunks: Sequence[torch.Tensor]) -> Iterator[Any]:
            sampler.chunks = [c.tolist() for c in chunks]
            return iter(loader)

        return read


class _Chunks:
    """A batch sampler whose batches are set before each epoch: the persistent workers stay."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """A uint8 batch as the float the models train on (on whatever device it is)."""
    return (x.float() / 255.0 - MEAN) / STD


def _cache_key(listing: Listing, spec: FileSpec) -> str:
    """Names the decoded data: the files (with their sizes and times), the targets' files, the
    size and what makes an item bad (the codes), so a changed file makes a new cache."""
    h = hashlib.sha256(f"{spec.image_size}|{len(listing.classes)}|{listing.task}".encode())
    for item in listing.items:
        for f in (item.file, item.target) if isinstance(item.target, Path) else (item.file,):
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _decode_all(spec: FileSpec, listing: Listing) -> tuple[list[int], Any, _Cache | None]:
    """The decode pass: every item checked, decoded and resized once. Returns the good items'
    indices and where their pixels are: in memory while they fit the budget, else in the
    on-disk cache (made by this pass, or by an earlier one over the very same files), else
    nowhere (decoded again each epoch)."""
    size, items = spec.image_size, listing.items
    masks = listing.task == "segmentation"
    record = 3 * size * size + (size * size if masks else 0)
    total = record * len(items)
    in_memory = total <= cache_budget_bytes()
    cache: _Cache | None = None
    out: Any = None
    if in_memory:
        images = torch.empty(len(items), 3, size, size, dtype=torch.uint8)
        mask_pixels = torch.empty(len(items), size, size, dtype=torch.uint8) if masks else None
    else:
        folder = cache_dir()
        path = folder / f"{_cache_key(listing, spec)}.u8"
        cache = _Cache(path, size, masks)
        meta = path.with_suffix(".json")
        if path.exists() and meta.exists():
            # Decoded and checked before: only the bad items' verdicts are needed again.
            rows = json.loads(meta.read_text())["bad"]
            return _judge(spec, listing, dict(bad_rows(rows))), None, cache
        try:
            folder.mkdir(parents=True, exist_ok=True)
            room = shutil.disk_usage(folder).free > 2 * total
        except OSError:
            room = False
        if room:
            out = tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False)  # noqa: SIM115
        else:
            cache = None  # no room: decode again each epoch, after this pass has checked
    bad_items: dict[int, Bad] = {}
    try:
        for i, decoded in enumerate(_decoded(items, size, len(listing.classes))):
            if decoded[0] == "bad":
                bad_items[i] = decoded[1:]
                # Keep the record's place, so that a row is an item's index either way.
                if out is not None:
                    out.write(bytes(record))
                continue
            _, image, mask = decoded
            if in_memory:
                images[i] = image
                if mask_pixels is not None:
                    mask_pixels[i] = mask
            elif out is not None:
                out.write(image.numpy().tobytes())
                if masks:
                    out.write(mask.numpy().tobytes())
        good = _judge(spec, listing, bad_items)
    except BaseException:
        if out is not None:
            out.close()
            os.unlink(out.name)
        raise
    if out is not None and cache is not None:
        out.close()
        os.replace(out.name, cache.path)
        meta_file = cache.path.with_suffix(".json")
        rows = [[i, *b] for i, b in bad_items.items()]
        meta_file.write_text(json.dumps({"bad": rows}))
    if in_memory:
        return good, (images, mask_pixels), None
    return good, None, cache


def bad_rows(rows: Sequence[Sequence[Any]]) -> Iterator[tuple[int, Bad]]:
    for i, field, where, why in rows:
        yield int(i), (field, where, why)


def _judge(spec: FileSpec, listing: Listing, bad: dict[int, Bad]) -> list[int]:
    """Refuse the dataset at its first bad item, or skip them all (``skip_bad``); the rest."""
    for i in sorted(bad):
        listing.bad(spec, *bad[i])
    return [i for i in range(len(listing.items)) if i not in bad]


def _from_files(spec: FileSpec, roots: Sequence[Path]) -> Split:
    listing = list_files(spec, roots)
    good, pixels, cache = _decode_all(spec, listing)
    if not good:
        raise DataError("recipe.data.path", f"'{spec.path}' holds no usable images")
    fixed = [listing.items[i].valid for i in good]
    if fixed[0] is None:
        train_pos, valid_pos = _split_indices(len(good), spec.valid_pct, spec.split_seed)
        order = torch.tensor(good)
        train_rows, valid_rows = order[train_pos], order[valid_pos]
    else:
        train_rows = torch.tensor([i for i, v in zip(good, fixed, strict=True) if not v])
        valid_rows = torch.tensor([i for i, v in zip(good, fixed, strict=True) if v])
    if not len(train_rows) or not len(valid_rows):
        raise DataError(
            "recipe.data.path", f"'{spec.path}' needs images on both sides of its split"
        )
    n = len(listing.classes)

    def images(rows: torch.Tensor) -> Images:
        return Images(
            listing.items, rows, size=spec.image_size, task=listing.task, n_classes=n,
            pixels=pixels, cache=cache,
        )  # fmt: skip

    train, valid = images(train_rows), images(valid_rows)
    if listing.skipped:
        log.warning(
            "%s: skipped %d bad files (skip_bad): %s",
            spec.path, len(listing.skipped), "; ".join(listing.skipped[:5]),
        )  # fmt: skip
    return Split(train, train.targets, valid, valid.targets, n, listing.task, listing.skipped)
