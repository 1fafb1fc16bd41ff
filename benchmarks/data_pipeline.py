"""The image pipeline on folders larger than memory should stay flat: generated folders of 2,000
and 20,000 JPEGs at 128 px (10 class folders; made under --root when missing, then reused).

Two figures, one JSON line:
- ``rss_ratio``: peak RSS of loading and training one epoch on 20,000 images against 2,000
  (each in a fresh process, the process and its DataLoader workers; default settings, so the
  2,000 are kept in memory as uint8 and the 20,000 go to the on-disk cache). Target <= 1.3.
- ``loader_ratio``: images per second through the loader over the 20,000 (2 workers, batches of
  64, uint8 at 128 px; after the decode pass, which is timed apart as ``prepare_s``) against
  torchvision's ``ImageFolder`` + ``DataLoader`` with the same workers and transforms (decode,
  resize to 128, to a uint8 tensor), run side by side. Target >= 0.9. ``loader_ratio_files``:
  the same with no cache (decoded again each epoch, as torchvision does).

Usage: python -m benchmarks.data_pipeline [--root /tmp/advisor-bench] [--size 128]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

CLASSES = 10
SIZES = (2_000, 20_000)


def _write(args: tuple[Path, int, int]) -> None:
    import numpy as np
    from PIL import Image

    folder, start, stop = args
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        c = i % CLASSES
        # A class colour, a gradient and noise: JPEGs of a realistic size (a few KB).
        base = np.array([25 * c, 255 - 25 * c, (70 * c) % 255], dtype=np.float32)
        ramp = np.linspace(-40, 40, 128, dtype=np.float32)[:, None, None]
        pixels = base + ramp + rng.normal(0, 20, (128, 128, 3))
        out = folder / f"class{c}" / f"{i}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, quality=90)


def make_folder(root: Path, n: int) -> Path:
    """``root/images-{n}``: n JPEGs in 10 class folders, written once (a marker says done)."""
    folder = root / f"images-{n}"
    if (folder / ".complete").exists():
        return folder
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    step = 1000
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_write, [(folder, s, min(s + step, n)) for s in range(0, n, step)]))
    (folder / ".complete").touch()
    return folder


def peak_rss_mb() -> float:
    """This process's peak RSS plus its largest child's (a DataLoader worker), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def one_epoch(root: Path, n: int, size: int) -> None:
    """(In a fresh process.) Load the folder and train one epoch; print the peak RSS."""
    import torch

    from app.builder import build_model
    from app.builder.datasets import ImageFolderSpec
    from app.builder.recipe import Recipe
    from app.training.data import load
    from app.training.loop import TrainConfig, fit

    torch.set_num_threads(1)
    spec = ImageFolderSpec(kind="image_folder", path=f"images-{n}", image_size=size)
    started = time.perf_counter()
    split = load(spec, [root])
    prepared = time.perf_counter() - started
    model = build_model(Recipe(arch="simple_cnn_small", image_size=size), split.n_out)
    config = TrainConfig(epochs=1, lr=1e-3, weight_decay=0.01, batch_size=64, augment="basic")
    data = (split.train_x, split.train_y, split.valid_x, split.valid_y)
    fit(model, data, config, task="classification", n_classes=split.n_out)
    print(json.dumps({"rss_mb": peak_rss_mb(), "prepare_s": prepared,
                      "epoch_s": time.perf_counter() - started - prepared}))  # fmt: skip


def measured_epoch(root: Path, n: int, size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_pipeline", "--root", str(root), "--size",
         str(size), "--epoch-of", str(n)],
        capture_output=True, text=True, check=True, env={**os.environ, "ADVISOR_DATA_WORKERS": "2"},
    )  # fmt: skip
    figures: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return figures


def ours(root: Path, n: int, size: int, workers: int) -> tuple[float, float]:
    """Images/s through our loader over a whole epoch, and the decode pass's seconds."""
    import torch

    from app.builder.datasets import ImageFolderSpec
    from app.training.data import load

    os.environ["ADVISOR_DATA_WORKERS"] = str(workers)
    started = time.perf_counter()
    split = load(ImageFolderSpec(kind="image_folder", path=f"images-{n}", image_size=size), [root])
    prepared = time.perf_counter() - started
    images = split.train_x
    read = images.batches(pin=False)
    order = torch.randperm(len(images))
    started, seen = time.perf_counter(), 0
    for x, _ in read(torch.split(order, 64)):
        seen += len(x)
    return seen / (time.perf_counter() - started), prepared


def torchvisions(folder: Path, size: int, workers: int) -> float:
    """Images/s through torchvision's ImageFolder + DataLoader, the same work per image."""
    import torch
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose([v2.PILToTensor(), v2.Resize([size, size], antialias=True)])
    loader = torch.utils.data.DataLoader(
        ImageFolder(str(folder), transform=transform),
        batch_size=64, shuffle=True, num_workers=workers, prefetch_factor=4,
    )  # fmt: skip
    started, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "advisor-bench")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epoch-of", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epoch_of:
        one_epoch(args.root, args.epoch_of, args.size)
        return
    folders = {n: make_folder(args.root, n) for n in SIZES}
    small, large = (measured_epoch(args.root, n, args.size) for n in SIZES)
    rates: dict[str, float] = {}
    rates["ours"], prepare_s = ours(args.root, SIZES[1], args.size, args.workers)
    rates["torchvision"] = torchvisions(folders[SIZES[1]], args.size, args.workers)
    os.environ["ADVISOR_DATA_CACHE_DIR"] = "/proc/no-cache"  # no room: decode each epoch
    rates["ours_files"], _ = ours(args.root, SIZES[1], args.size, args.workers)
    print(
        json.dumps(
            {
                "benchmark": "data_pipeline",
                "image_size": args.size,
                "workers": args.workers,
                "peak_rss_mb": {str(SIZES[0]): round(small["rss_mb"]),
                                str(SIZES[1]): round(large["rss_mb"])},
                "rss_ratio": round(large["rss_mb"] / small["rss_mb"], 2),
                "epoch_s": {str(SIZES[0]): round(small["epoch_s"], 1),
                            str(SIZES[1]): round(large["epoch_s"], 1)},
                "prepare_s": {str(SIZES[0]): round(small["prepare_s"], 1),
                              str(SIZES[1]): round(large["prepare_s"], 1)},
                "images_per_s": {k: round(v) for k, v in rates.items()},
                "loader_ratio": round(rates["ours"] / rates["torchvision"], 2),
                "loader_ratio_files": round(rates["ours_files"] / rates["torchvision"], 2),
                "cores": os.cpu_count(),
                "cache_prepare_s": round(prepare_s, 1),
            }
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
