"""Datasets generated on disk for the tests, in the layouts the builder reads (fastai's): class
folders, a CSV of file names and labels (multi-label too), and CamVid's images, masks and
codes.txt. Each class has its own colour, so a small model learns it in a few epochs."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image

# A colour per class (R, G, B): single-label classes, and the channels multi-label rows light.
COLOURS = {"cat": (200, 40, 40), "dog": (40, 40, 200), "fox": (40, 200, 40)}
CHANNELS = ("red", "green", "blue")


def image(path: Path, colour: tuple[int, int, int], size: int = 16, seed: int = 0) -> Path:
    """A noisy image of ``colour`` (PNG, or JPEG by the suffix)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def image_folder(root: Path, name: str = "pets", per_class: int = 12, size: int = 16) -> Path:
    folder = root / name
    for c, colour in enumerate(("cat", "dog")):
        for i in range(per_class):
            image(folder / colour / f"{i}.png", COLOURS[colour], size, seed=100 * c + i)
    return folder


def image_csv(
    root: Path,
    name: str = "csvpets",
    n: int = 24,
    *,
    multi: bool = False,
    valid_col: bool = False,
    size: int = 16,
) -> Path:
    """``name/images/{i}.png`` and ``name/labels.csv`` (columns fname, labels[, is_valid]).
    Single-label: cat or dog. Multi-label: the channels lit, space-separated ("red blue")."""
    folder = root / name
    rows: list[list[str]] = []
    for i in range(n):
        if multi:
            lit = [ch for b, ch in enumerate(CHANNELS) if (i + 1) >> b & 1]
            colour = tuple(210 if ch in lit else 30 for ch in CHANNELS)
            label = " ".join(lit)
        else:
            label = ("cat", "dog")[i % 2]
            colour = COLOURS[label]
        image(folder / "images" / f"{i}.png", colour, size, seed=i)  # type: ignore[arg-type]
        rows.append(
            [f"{i}.png", label] + (["true" if i % 4 == 0 else "false"] if valid_col else [])
        )
    write_csv(
        folder / "labels.csv", ["fname", "labels"] + (["is_valid"] if valid_col else []), rows
    )
    return folder


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def segmentation_folder(
    root: Path, name: str = "camvid", n: int = 16, size: int = 16, suffix: str = "_P"
) -> Path:
    """CamVid's layout: ``images/{i}.png``, ``labels/{i}{suffix}.png`` and ``codes.txt``
    (Void, Square): a bright square on a dark background, its mask the square."""
    folder = root / name
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.normal(40, 10, (size, size, 3))
        mask = np.zeros((size, size), np.uint8)
        side = size // 2
        top, left = rng.integers(0, size - side, 2)
        pixels[top : top + side, left : left + side] = 220
        mask[top : top + side, left : left + side] = 1
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            folder / "images" / f"{i}.png"
        )
        Image.fromarray(mask).save(folder / "labels" / f"{i}{suffix}.png")
    (folder / "codes.txt").write_text("Void\nSquare\n")
    return folder


def corrupt(path: Path) -> Path:
    """Overwrite an image with bytes no decoder reads."""
    path.write_bytes(b"not an image at all" * 10)
    return path


def mask(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.uint8)).save(path)
    return path
