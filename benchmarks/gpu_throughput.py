"""GPU check (run where a CUDA device is lent): training images/s with and without the loop's
CUDA settings (bf16 autocast, channels-last, pinned non-blocking copies, cuDNN autotuning), and
one 3-seed verification on cuda through the worker. Prints one JSON line.

Usage: python -m benchmarks.gpu_throughput [--size 128] [--epochs 2] [--batch-size 128]
"""

import argparse
import json
import subprocess
import sys
import time

import torch

from app.builder import build_model
from app.builder.datasets import DigitsSpec
from app.builder.recipe import Recipe
from app.training.data import load
from app.training.loop import TrainConfig, fit


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
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
                "verification": json.loads(verify.stdout.splitlines()[-1]),
            }
        )
    )


if __name__ == "__main__":
    main()
