"""One retrain on one device against the same retrain spread over several (DistributedDataParallel,
one process per device), side by side in one run: wall time from the call to the last epoch (the
processes' start included) and the final validation metric, over a few seeds. Prints one JSON
line.

On this CPU machine: ``--devices cpu --devices cpu,cpu`` (gloo). On a GPU machine:
``--devices cuda:0 --devices cuda:0,cuda:1,...`` (NCCL), e.g. ``--image-size 64 --epochs 10``.

Usage: python -m benchmarks.ddp [--devices cpu --devices cpu,cpu] [--seeds 2] [--epochs 6]
"""

import argparse
import json
import time
from statistics import fmean, pstdev

import torch
from rich.progress import Progress

from app.builder.recipe import PRIMARY_METRIC, Recipe
from app.training.trial import epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", action="append", help="a comma-separated device set")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6, help="at least 2")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--arch", default="simple_cnn_small")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    sets = [tuple(d.split(",")) for d in (args.devices or ["cpu", "cpu,cpu"])]
    torch.set_num_threads(args.threads)
    recipe = Recipe.model_validate({
        "arch": args.arch, "epochs": args.epochs, "batch_size": args.batch_size, "lr": 3e-3,
        "data": {"kind": "digits", "image_size": args.image_size},
    })  # fmt: skip
    metric = PRIMARY_METRIC[recipe.task]
    found: dict[str, dict[str, list[float]]] = {}
    with Progress() as progress:
        bar = progress.add_task("trainings", total=len(sets) * args.seeds)
        # Seeds outermost: a drift of the machine's load hits every device set alike.
        for seed in range(args.seeds):
            for devices in sets:
                started = time.perf_counter()
                ends = []
                for result in epochs(recipe, seed, devices=devices, roots=(), label=None):
                    ends.append(time.perf_counter() - started)
                    final = result.metrics[metric]
                entry = found.setdefault(",".join(devices), {})
                entry.setdefault("seconds", []).append(time.perf_counter() - started)
                entry.setdefault("first_epoch", []).append(ends[0])
                entry.setdefault("later_epoch", []).append((ends[-1] - ends[0]) / (len(ends) - 1))
                entry.setdefault("final", []).append(final)
                progress.advance(bar)
    first = ",".join(sets[0])
    report = {
        "recipe": {"arch": args.arch, "image_size": args.image_size, "epochs": args.epochs,
                   "batch_size": args.batch_size},
        "metric": metric,
        "seeds": args.seeds,
        "threads_per_process": args.threads,
        "sets": {name: summary(e, found[first]) for name, e in found.items()},
    }  # fmt: skip
    print(json.dumps(report))


def summary(entry: dict[str, list[float]], first: dict[str, list[float]]) -> dict[str, float]:
    return {
        "seconds_mean": round(fmean(entry["seconds"]), 2),
        # The processes' start (spawn, imports, process group) falls in the first epoch.
        "first_epoch_s": round(fmean(entry["first_epoch"]), 2),
        "later_epoch_s": round(fmean(entry["later_epoch"]), 3),
        "final_mean": round(fmean(entry["final"]), 4),
        "final_sd": round(pstdev(entry["final"]), 4),
        "time_ratio_to_first": round(fmean(entry["seconds"]) / fmean(first["seconds"]), 3),
        "later_epoch_ratio_to_first": round(
            fmean(entry["later_epoch"]) / fmean(first["later_epoch"]), 3
        ),
        "final_difference_to_first": round(fmean(entry["final"]) - fmean(first["final"]), 4),
    }


if __name__ == "__main__":
    main()
