"""The project's training loop against a minimal hand-written PyTorch loop: same model, data,
batch size, epochs, optimizer and schedule, one validation pass per epoch, run alternately in one
process. Prints one JSON line with the per-pair time ratios and their median.

Usage: python -m benchmarks.train_overhead [--arch resnet18] [--pairs 3] [--epochs 3]
"""

import argparse
import json
import math
import time
from statistics import median

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from app.builder import build_model
from app.builder.datasets import DigitsSpec
from app.builder.recipe import Recipe
from app.training.data import load
from app.training.loop import TrainConfig, fit


def hand_written(
    model: nn.Module, data: tuple[torch.Tensor, ...], epochs: int, bs: int, lr: float
) -> None:
    """What one writes by hand: shuffle, step, schedule, then a validation pass."""
    train_x, train_y, valid_x, valid_y = data
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = math.ceil(len(train_x) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        for i in range(steps):
            idx = order[i * bs : (i + 1) * bs]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            logits = model(valid_x)
            F.cross_entropy(logits, valid_y)
            (logits.argmax(1) == valid_y).float().mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    split = load(DigitsSpec(kind="digits", image_size=32), ())
    data = (split.train_x, split.train_y, split.valid_x, split.valid_y)
    recipe = Recipe(arch=args.arch, image_size=32)
    lr = 1e-3

    def ours() -> None:
        torch.manual_seed(0)
        model = build_model(recipe, 10)
        config = TrainConfig(
            epochs=args.epochs, lr=lr, weight_decay=0.01, batch_size=args.batch_size
        )
        fit(model, data, config, task="classification", n_classes=10)

    def theirs() -> None:
        torch.manual_seed(0)
        hand_written(build_model(recipe, 10), data, args.epochs, args.batch_size, lr)

    timings: dict[str, list[float]] = {"ours": [], "hand_written": []}
    theirs()  # warm-up: allocator, kernels, first-touch of the data
    for pair in range(args.pairs):
        # Alternate which goes first, so drift in the machine's speed cancels out.
        order = [("ours", ours), ("hand_written", theirs)]
        for name, fn in order if pair % 2 == 0 else reversed(order):
            started = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - started)
    ratios = [o / h for o, h in zip(timings["ours"], timings["hand_written"], strict=True)]
    print(
        json.dumps(
            {
                "benchmark": "train_overhead",
                "model": args.arch,
                "data": "digits 32px",
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "device": "cpu",
                "threads": torch.get_num_threads(),
                "seconds_ours": [round(t, 2) for t in timings["ours"]],
                "seconds_hand_written": [round(t, 2) for t in timings["hand_written"]],
                "ratios": [round(r, 4) for r in ratios],
                "median_ratio": round(median(ratios), 4),
                "target": 1.03,
            }
        )
    )


if __name__ == "__main__":
    main()
