"""U-Net with skips against the naive decoders (nearest-neighbour + conv, transposed conv) on
generated shapes segmentation: same body, data, budget and seeds, on the CPU.

Prints one JSON line: validation IoU and Dice (foreground classes) per decoder, per seed and
their mean. Usage: python -m benchmarks.decoders [--arch simple_cnn_small_bn] [--epochs 12]
[--seeds 0 1]
"""

import argparse
import json
import time
from statistics import fmean

import torch
from rich.progress import Progress

from app.builder import build_model
from app.builder.recipe import Decoder, Recipe
from app.training.loop import TrainConfig, fit
from app.training.shapes import SHAPE_CLASSES, make_shapes

DECODERS: tuple[Decoder, ...] = ("unet", "nearest", "transposed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="simple_cnn_small_bn")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args()
    torch.set_num_threads(2)

    started = time.monotonic()
    images, masks = make_shapes(args.n, args.size, seed=1234)
    cut = int(0.8 * args.n)
    train_x, train_y, valid_x, valid_y = images[:cut], masks[:cut], images[cut:], masks[cut:]
    scores: dict[str, list[dict[str, float]]] = {d: [] for d in DECODERS}
    with Progress(transient=True) as progress:
        task = progress.add_task("training decoders", total=len(DECODERS) * len(args.seeds))
        for seed in args.seeds:
            for decoder in DECODERS:
                torch.manual_seed(seed)
                recipe = Recipe(
                    arch=args.arch, task="segmentation", decoder=decoder, image_size=args.size
                )
                model = build_model(recipe, n_out=len(SHAPE_CLASSES))
                config = TrainConfig(
                    epochs=args.epochs,
                    lr=args.lr,
                    weight_decay=0.01,
                    batch_size=args.batch_size,
                    seed=seed,
                )
                results = fit(
                    model,
                    (train_x, train_y, valid_x, valid_y),
                    config,
                    task="segmentation",
                    n_classes=len(SHAPE_CLASSES),
                )
                scores[decoder].append(results[-1].metrics)
                progress.advance(task)

    print(
        json.dumps(
            {
                "benchmark": "decoders",
                "body": args.arch,
                "data": {
                    "kind": "shapes",
                    "n_train": cut,
                    "n_valid": args.n - cut,
                    "image_size": args.size,
                },
                "epochs": args.epochs,
                "seeds": args.seeds,
                "decoders": {
                    d: {
                        "iou": round(fmean(s["iou"] for s in runs), 4),
                        "dice": round(fmean(s["dice"] for s in runs), 4),
                        "iou_per_seed": [round(s["iou"], 4) for s in runs],
                        "dice_per_seed": [round(s["dice"], 4) for s in runs],
                    }
                    for d, runs in scores.items()
                },
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
