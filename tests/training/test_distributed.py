"""One training across several processes (gloo on the CPU): the same curve as on one, and a
process that dies ends the training cleanly."""

import os
import signal
from pathlib import Path

import pytest
import torch

from app.builder.recipe import Recipe
from app.training.distributed import RankFailed
from app.training.loop import EpochResult, Stopped
from app.training.trial import epochs

RECIPE = Recipe.model_validate({
    "arch": "simple_cnn_small", "head": {"ps": 0.0, "lin_ftrs": [32]}, "epochs": 5,
    "batch_size": 64, "lr": 3e-3, "data": {"kind": "digits", "image_size": 16},
})  # fmt: skip


def curve(devices: tuple[str, ...], seed: int) -> list[EpochResult]:
    return list(epochs(RECIPE, seed, devices=devices, roots=(), label=None))


def training_processes(parent: int | None = None) -> list[int]:
    """The children of ``parent`` (this process) that run a training (not multiprocessing's
    resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent_of = int(stat.rsplit(")", 1)[1].split()[1])
        if parent_of == (parent or os.getpid()) and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def test_two_processes_train_like_one() -> None:
    torch.set_num_threads(1)
    for seed in (0, 1):
        one, two = curve(("cpu",), seed), curve(("cpu", "cpu"), seed)
        assert [r.epoch for r in two] == list(range(RECIPE.epochs))
        for curve_ in (one, two):  # the same shape: loss falls epoch on epoch, accuracy climbs
            losses = [r.train_loss for r in curve_]
            assert losses == sorted(losses, reverse=True), losses
            assert curve_[-1].metrics["accuracy"] > 0.9
        for a, b in zip(one, two, strict=True):
            assert abs(a.train_loss - b.train_loss) < 0.1
        # Digits at this size: finals of one process vary by about 0.015 from seed to seed.
        assert abs(one[-1].metrics["accuracy"] - two[-1].metrics["accuracy"]) < 0.03
        assert abs(one[-1].valid_loss - two[-1].valid_loss) < 0.1
    assert training_processes() == [], "every training process has ended"


def test_a_killed_process_fails_the_training_and_leaves_none_behind() -> None:
    steps = epochs(RECIPE, 0, devices=("cpu", "cpu"), roots=(), label=None)
    first = next(steps)
    assert first.epoch == 0
    ranks = training_processes()
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    with pytest.raises(RankFailed, match="terminated with signal SIGKILL"):
        list(steps)
    assert training_processes() == []


def test_a_stop_between_epochs_ends_every_process() -> None:
    asked = iter([False, False, True])
    steps = epochs(
        RECIPE, 0, devices=("cpu", "cpu"), roots=(), label=None, should_stop=lambda: next(asked)
    )
    assert [r.epoch for r in (next(steps), next(steps))] == [0, 1]
    with pytest.raises(Stopped):
        next(steps)
    assert training_processes() == []
