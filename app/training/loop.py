"""The training loop: AdamW, one-cycle (or constant / cosine) schedule, per-epoch train loss,
valid loss and metrics — accuracy for classification, IoU and Dice for segmentation."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

Task = Literal["classification", "segmentation"]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    valid_loss: float
    metrics: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, object]:
        """The shape of an epoch in a run report."""
        return {"epoch": self.epoch, "train_loss": self.train_loss,
                "valid_loss": self.valid_loss, "metrics": self.metrics}  # fmt: skip


def scheduler(
    optimizer: torch.optim.Optimizer, kind: str, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if kind == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


class Metrics:
    """Accumulates what the epoch's metrics need over the validation batches."""

    def __init__(self, task: Task, n_classes: int) -> None:
        self.task, self.n_classes = task, n_classes
        self.correct = self.total = 0
        self.confusion = torch.zeros(n_classes, n_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        pred = logits.argmax(dim=1)
        if self.task == "classification":
            self.correct += int((pred == target).sum())
            self.total += target.numel()
            return
        idx = target.flatten() * self.n_classes + pred.flatten()
        self.confusion += torch.bincount(idx, minlength=self.n_classes**2).view(
            self.n_classes, self.n_classes
        )

    def result(self) -> dict[str, float]:
        if self.task == "classification":
            return {"accuracy": self.correct / max(self.total, 1)}
        # Foreground classes only (class 0 is the background), averaged over classes present.
        tp = self.confusion.diag()[1:].double()
        fp = self.confusion[:, 1:].sum(0).double() - tp
        fn = self.confusion[1:, :].sum(1).double() - tp
        present = (tp + fn) > 0
        iou = (tp / (tp + fp + fn).clamp(min=1))[present].mean()
        dice = (2 * tp / (2 * tp + fp + fn).clamp(min=1))[present].mean()
        return {"iou": float(iou), "dice": float(dice)}


def evaluate(
    model: nn.Module, batches: Batches, task: Task, n_classes: int
) -> tuple[float, dict[str, float]]:
    model.eval()
    metrics = Metrics(task, n_classes)
    loss_sum, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum")) / (y[0].numel())
            count += len(y)
            metrics.update(logits, y)
    return loss_sum / max(count, 1), metrics.result()


def fit(
    model: nn.Module,
    train: Callable[[], Batches],
    valid: Callable[[], Batches],
    *,
    task: Task,
    n_classes: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    steps_per_epoch: int,
    schedule: str = "one_cycle",
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> list[EpochResult]:
    """Train ``model`` for ``epochs``; ``train``/``valid`` give a fresh pass over the batches."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = scheduler(optimizer, schedule, lr, epochs * steps_per_epoch)
    results = []
    for epoch in range(epochs):
        model.train()
        loss_sum, count = 0.0, 0
        for x, y in train():
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(y)
            count += len(y)
        valid_loss, metrics = evaluate(model, valid(), task, n_classes)
        result = EpochResult(epoch, loss_sum / max(count, 1), valid_loss, metrics)
        results.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return results
