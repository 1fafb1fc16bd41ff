"""Generated shapes and the training loop's figures."""

from typing import Any

import torch

from app.builder import build_model
from app.builder.recipe import Recipe
from app.training.loop import EpochResult, Metrics, TrainConfig, fit
from app.training.shapes import SHAPE_CLASSES, make_shapes


def test_shapes_are_deterministic_and_labelled() -> None:
    x, y = make_shapes(12, 40, seed=5)
    x2, y2 = make_shapes(12, 40, seed=5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(y, make_shapes(12, 40, seed=6)[1])
    assert x.shape == (12, 3, 40, 40) and y.shape == (12, 40, 40)
    assert set(torch.unique(y).tolist()) <= set(range(len(SHAPE_CLASSES)))
    assert all((m > 0).any() for m in y), "every image has a shape"
    # A shape's pixels differ from the background's: the mask is visible in the image.
    fg, bg = x[0][:, y[0] > 0], x[0][:, y[0] == 0]
    assert (fg.mean(dim=1) - bg.mean(dim=1)).abs().max() > 0.1


def test_iou_and_dice_from_a_known_confusion() -> None:
    metrics = Metrics("segmentation", 3)
    target = torch.tensor([[0, 0, 1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 0]])
    metrics.update(torch.nn.functional.one_hot(pred, 3).permute(0, 2, 1).float(), target)
    result = metrics.result()
    # class 1: tp 2, fp 1, fn 0 -> IoU 2/3, Dice 4/5; class 2: tp 1, fp 0, fn 1 -> 1/2, 2/3.
    assert abs(result["iou"] - (2 / 3 + 1 / 2) / 2) < 1e-9
    assert abs(result["dice"] - (4 / 5 + 2 / 3) / 2) < 1e-9
    acc = Metrics("classification", 3)
    acc.update(torch.eye(3)[[0, 1, 2, 2]], torch.tensor([0, 1, 1, 2]))
    assert acc.result() == {"accuracy": 0.75}


def test_fit_learns_a_small_segmentation_task() -> None:
    torch.manual_seed(0)
    x, y = make_shapes(48, 32, seed=1)
    model = build_model(Recipe(arch="simple_cnn_small_bn", task="segmentation", image_size=32), 4)
    seen: list[EpochResult] = []
    config = TrainConfig(epochs=4, lr=1e-2, weight_decay=0.0, batch_size=8)
    results = fit(model, (x, y, x, y), config, task="segmentation", n_classes=4,
                  on_epoch=seen.append)  # fmt: skip
    assert [r.epoch for r in results] == [0, 1, 2, 3] and seen == results
    assert results[-1].train_loss < results[0].train_loss
    assert set(results[-1].metrics) == {"iou", "dice"}
    assert results[-1].record()["valid_loss"] == results[-1].valid_loss


def test_training_is_repeatable_on_the_cpu_and_augments() -> None:
    """Same recipe, seed and data: the same curve to the last digit, augmentation and MixUp on."""
    from app.builder.datasets import DigitsSpec
    from app.builder.recipe import MixupSpec
    from app.training.data import load
    from app.training.trial import figures

    split = load(DigitsSpec(kind="digits", image_size=16), (), fraction=0.3, seed=1)
    data = (split.train_x, split.train_y, split.valid_x, split.valid_y)
    recipe = Recipe(arch="simple_cnn_small", mixup=MixupSpec(alpha=0.4))
    config = TrainConfig(epochs=2, lr=3e-3, weight_decay=0.01, batch_size=32, augment="strong",
                         mixup=("mixup", 0.4), seed=7)  # fmt: skip

    def curve() -> list[dict[str, object]]:
        torch.manual_seed(7)
        model = build_model(recipe, 10)
        return [r.record() for r in fit(model, data, config, task="classification", n_classes=10)]

    first, second = curve(), curve()
    assert first == second
    assert len(split.train_x) == round(0.3 * 1438)
    results = fit(build_model(recipe, 10), data, config, task="classification", n_classes=10)
    summary = figures(results, "accuracy")
    assert summary["best_metric"] >= summary["final_metric"]
    assert 0 <= summary["final_metric"] <= 1


def test_interleaved_trainings_give_the_curves_they_give_alone() -> None:
    """A race advances several trainings epoch by epoch in turn; each keeps its own random state
    (augmentation, MixUp and dropout draw from torch's global generator), so its curve is the
    one it gives trained alone."""
    from app.builder.datasets import DigitsSpec
    from app.builder.recipe import MixupSpec
    from app.training.data import load
    from app.training.loop import train

    split = load(DigitsSpec(kind="digits", image_size=16), (), fraction=0.2, seed=1)
    data = (split.train_x, split.train_y, split.valid_x, split.valid_y)

    def start(seed: int, mixup: bool) -> Any:
        recipe = Recipe(arch="simple_cnn_small", head={"ps": 0.5, "lin_ftrs": [32]},
                        mixup=MixupSpec(alpha=0.4) if mixup else None)  # fmt: skip
        torch.manual_seed(seed)
        model = build_model(recipe, 10)
        config = TrainConfig(epochs=3, lr=3e-3, weight_decay=0.0, batch_size=32, augment="basic",
                             mixup=("mixup", 0.4) if mixup else None, seed=seed)  # fmt: skip
        return train(model, data, config, task="classification", n_classes=10, label=None)

    alone = [[r.record() for r in start(seed, mix)] for seed, mix in ((0, True), (1, False))]
    lanes = [start(0, True), start(1, False)]
    together: list[list[dict[str, object]]] = [[], []]
    for _ in range(3):
        for lane, out in zip(lanes, together, strict=True):
            out.append(next(lane).record())
    assert together == alone
