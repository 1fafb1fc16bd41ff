"""GPU check (run where a CUDA device is lent): training images/s with and without the loop's
CUDA settings (bf16 autocast, channels-last, pinned non-blocking copies, cuDNN autotuning), from
tensors in memory (digits) and from a folder of JPEGs read by the image pipeline (DataLoader
workers, uint8 to the device, augmented there) at 128 and 224 px; and one 3-seed verification
on cuda through the worker. Prints one JSON line.

Usage: python -m benchmarks.gpu_throughput [--size 128] [--epochs 2] [--batch-size 128]
       [--folder-root /tmp/advisor-bench]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from app.builder import build_model
from app.builder.datasets import DigitsSpec, ImageFolderSpec
from app.builder.recipe import Recipe
from app.training.data import load
from app.training.loop import TrainConfig, fit
from benchmarks.data_pipeline import make_folder

FOLDER_IMAGES = 2_000


def images_per_s(size: int, epochs: int, bs: int, tuned: bool) -> float:
    split = load(DigitsSpec(kind="digits", image_size=size), ())
    data = (split.train_x, split.train_y, split.valid_x, split.valid_y)
    torch.manual_seed(0)
    model = build_model(Recipe(arch="resnet18", image_size=size), 10)
    config = TrainConfig(epochs=epochs, lr=1e-3, weight_decay=0.01, batch_size=bs)
    torch.cuda.synchronize()
    started = time.perf_counter()
    fit(model, data, config, task="classification", n_classes=10, device="cuda", tuned=tuned)
    torch.cuda.synchronize()
    return epochs * len(split.train_x) / (time.perf_counter() - started)


def folder_images_per_s(root: Path, size: int, bs: int, tuned: bool) -> float:
    """resnet18 trained one epoch (augment "basic", on the device) from a folder of JPEGs:
    bf16 and channels-last (``tuned``) or fp32."""
    spec = ImageFolderSpec(kind="image_folder", path=f"images-{FOLDER_IMAGES}", image_size=size)
    split = load(spec, [root])
    data = (split.train_x, split.train_y, split.valid_x, split.valid_y)
    torch.manual_seed(0)
    model = build_model(Recipe(arch="resnet18", image_size=size), split.n_out)
    config = TrainConfig(epochs=1, lr=1e-3, weight_decay=0.01, batch_size=bs, augment="basic")
    torch.cuda.synchronize()
    started = time.perf_counter()
    fit(model, data, config, task="classification", n_classes=split.n_out, device="cuda",
        tuned=tuned)  # fmt: skip
    torch.cuda.synchronize()
    return len(split.train_x) / (time.perf_counter() - started)


def folder_rates(root: Path, bs: int) -> dict[str, dict[str, int | float]]:
    make_folder(root, FOLDER_IMAGES)
    out: dict[str, dict[str, int | float]] = {}
    for size in (128, 224):
        folder_images_per_s(root, size, bs, True)  # warm-up, and the decode pass at this size
        bf16 = folder_images_per_s(root, size, bs, True)
        fp32 = folder_images_per_s(root, size, bs, False)
        out[str(size)] = {"bf16_channels_last": round(bf16), "fp32": round(fp32),
                          "speedup": round(bf16 / fp32, 2)}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--folder-root", type=Path, default=Path(tempfile.gettempdir()) / "advisor-bench"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device here: run this where a GPU is lent")
    images_per_s(args.size, 1, args.batch_size, True)  # warm-up: context, kernels, autotuning
    rates: dict[str, list[float]] = {"tuned": [], "plain": []}
    for _ in range(2):
        for name, tuned in (("tuned", True), ("plain", False)):
            rates[name].append(images_per_s(args.size, args.epochs, args.batch_size, tuned))
    verify = subprocess.run(
        [sys.executable, "-m", "benchmarks.verify_cost", "--arch", "resnet18", "--device", "cuda"],
        capture_output=True,
        text=True,
        check=True,
    )
    print(
        json.dumps(
            {
                "benchmark": "gpu_throughput",
                "gpu": torch.cuda.get_device_name(0),
                "model": "resnet18",
                "image_size": args.size,
                "batch_size": args.batch_size,
                "images_per_s_tuned": [round(r) for r in rates["tuned"]],
                "images_per_s_plain": [round(r) for r in rates["plain"]],
                "speedup": round(max(rates["tuned"]) / max(rates["plain"]), 2),
                "folder_images_per_s": folder_rates(args.folder_root, args.batch_size),
                "verification": json.loads(verify.stdout.splitlines()[-1]),
            }
        )
    )


if __name__ == "__main__":
    main()
