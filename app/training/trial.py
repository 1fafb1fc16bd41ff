"""One trial: one recipe trained with one seed, and the figures a verification compares."""

import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from app.advisor.protocol import trial_figures
from app.builder import build_model
from app.builder.datasets import parse_spec
from app.builder.recipe import PRIMARY_METRIC, Recipe
from app.training.data import Split, load
from app.training.loop import EpochResult, Shard, TrainConfig, train


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' asked for, but CUDA is not available here")
    return device


def placement(devices: Sequence[str]) -> str:
    """Where a training ran, as trials record it: ``cuda:0``, or ``2xcuda`` across devices."""
    if len(devices) == 1:
        return devices[0]
    return f"{len(devices)}x{devices[0].partition(':')[0]}"


@lru_cache(maxsize=8)
def _load(spec_json: str, roots: tuple[Path, ...], fraction: float, seed: int) -> Split:
    return load(
        parse_spec(Recipe.model_validate_json(spec_json).data), roots, fraction=fraction, seed=seed
    )


def dataset(recipe: Recipe, roots: Sequence[Path]) -> Split:
    """The recipe's data, loaded once per process (trials of a verification share it)."""
    data_only = Recipe(arch=recipe.arch, data=recipe.data).model_dump_json()
    return _load(data_only, tuple(roots), recipe.data_fraction, 0)


def figures(results: Sequence[EpochResult], metric: str) -> dict[str, Any]:
    return trial_figures([r.record() for r in results], metric)


def training(
    recipe: Recipe,
    seed: int,
    split: Split,
    *,
    device: str,
    shard: Shard = Shard(),
    should_stop: Callable[[], bool] | None = None,
    label: str | None = None,
) -> Iterator[EpochResult]:
    """Train ``recipe`` with ``seed`` on ``split`` in this process, one epoch at a time (see
    :func:`app.training.loop.train`); ``shard``: as one of several processes."""
    torch.manual_seed(seed)
    model = build_model(recipe, split.n_out)
    config = TrainConfig(
        epochs=recipe.epochs,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        batch_size=recipe.batch_size,
        schedule=recipe.schedule,
        augment=recipe.augment,
        mixup=(recipe.mixup.kind, recipe.mixup.alpha) if recipe.mixup else None,
        seed=seed,
    )
    return train(
        model,
        (split.train_x, split.train_y, split.valid_x, split.valid_y),
        config,
        task=recipe.task,
        n_classes=split.n_out,
        device=device,
        should_stop=should_stop,
        label=label,
        shard=shard,
    )


def epochs(
    recipe: Recipe,
    seed: int,
    *,
    devices: Sequence[str],
    roots: Sequence[Path],
    should_stop: Callable[[], bool] | None = None,
    label: str | None = "trial",
) -> Iterator[EpochResult]:
    """Train ``recipe`` with ``seed``, one epoch at a time: here on one device, or across
    several with one process each (:mod:`app.training.distributed`)."""
    split = dataset(recipe, roots)
    if len(devices) == 1:
        return training(
            recipe, seed, split, device=devices[0], should_stop=should_stop, label=label
        )
    from app.training.distributed import spread

    return spread(
        training,
        (recipe, seed, split),
        devices=devices,
        epochs=recipe.epochs,
        should_stop=should_stop,
    )


def outcome(
    recipe: Recipe,
    results: Sequence[EpochResult],
    *,
    devices: Sequence[str],
    roots: Sequence[Path],
    duration_s: float,
) -> dict[str, Any]:
    """What a trial leaves: the curve, the figures, how long it took and where."""
    split = dataset(recipe, roots)
    return {
        "curve": [r.record() for r in results],
        "figures": figures(results, PRIMARY_METRIC[recipe.task]),
        "duration_s": duration_s,
        "device": placement(devices),
        "n_train": len(split.train_x),
        # The diagnosis reads the chance level of accuracy from it.
        "n_classes": split.n_out if recipe.task == "classification" else None,
    }


def run_trial(
    recipe: Recipe,
    seed: int,
    *,
    devices: Sequence[str],
    roots: Sequence[Path],
    on_epoch: Callable[[EpochResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    label: str | None = "trial",
) -> dict[str, Any]:
    """Train ``recipe`` with ``seed`` to the end (see :func:`epochs`); its :func:`outcome`."""
    started = time.monotonic()
    results = []
    for result in epochs(
        recipe, seed, devices=devices, roots=roots, should_stop=should_stop, label=label
    ):
        results.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return outcome(
        recipe, results, devices=devices, roots=roots, duration_s=time.monotonic() - started
    )
