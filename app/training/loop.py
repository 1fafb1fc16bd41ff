"""The training loop: AdamW, one-cycle (or constant / cosine) schedule, augmentation and
MixUp/CutMix, per-epoch train loss, valid loss and metrics — accuracy for classification, IoU
and Dice for segmentation.

One code path for every device and for one process or several. On CUDA it adds what pays there:
bf16 autocast, channels-last memory, pinned host batches copied without blocking, and cuDNN
autotuning. Across processes (``Shard``, see ``app.training.distributed``) the model is wrapped in
DistributedDataParallel and each process trains on its share of every batch, so the recipe's batch
size stays the global one and the schedule takes the same steps as on one device. Seeded, it
repeats exactly on the CPU.
"""

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from rich.progress import Progress
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, TensorDataset

from app.builder.recipe import Augment, Task
from app.training.augment import Augmenter, batch_mixer


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    valid_loss: float
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self, epochs: int) -> str:
        """One line for people: where training is and how it goes."""
        figures = " ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        return (
            f"epoch {self.epoch + 1}/{epochs} train_loss {self.train_loss:.4f} "
            f"valid_loss {self.valid_loss:.4f} {figures}"
        ).rstrip()

    def record(self) -> dict[str, object]:
        """The shape of an epoch in a run report."""
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "valid_loss": self.valid_loss,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    schedule: str = "one_cycle"
    augment: Augment = "none"
    mixup: tuple[str, float] | None = None  # (kind, alpha)
    seed: int = 0


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes training one model together."""

    rank: int = 0
    world: int = 1
    # Where collectives run: NCCL reduces CUDA tensors only.
    device: str = "cpu"

    def reduce(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """Each value summed over the processes (as is, in one process)."""
        if self.world == 1:
            return list(values)
        flat = torch.cat([v.reshape(-1).double() for v in values]).to(self.device)
        dist.all_reduce(flat)
        flat = flat.cpu()
        out, at = [], 0
        for v in values:
            out.append(flat[at : at + v.numel()].reshape(v.shape).to(v.dtype))
            at += v.numel()
        return out


class Stopped(Exception):
    """Training was asked to stop between epochs (cancellation, shutdown)."""


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
        pred = logits.argmax(dim=1).cpu()
        target = target.cpu()
        if self.task == "classification":
            self.correct += int((pred == target).sum())
            self.total += target.numel()
            return
        idx = target.flatten() * self.n_classes + pred.flatten()
        self.confusion += torch.bincount(idx, minlength=self.n_classes**2).view(
            self.n_classes, self.n_classes
        )

    def reduce(self, shard: Shard) -> None:
        """Gather the counts of every process's share of the validation set."""
        counts = torch.tensor([self.correct, self.total])
        counts, self.confusion = shard.reduce(counts, self.confusion)
        self.correct, self.total = int(counts[0]), int(counts[1])

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


class Device:
    """Where tensors go, and the CUDA-only settings, decided once (``tuned=False`` leaves them
    off, to measure what they bring)."""

    def __init__(self, device: torch.device, tuned: bool = True) -> None:
        self.device = device
        self.cuda = device.type == "cuda" and tuned
        self.memory_format = torch.channels_last if self.cuda else torch.preserve_format
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cuda:
            return x.to(self.device), y.to(self.device)
        x = x.pin_memory().to(self.device, non_blocking=True, memory_format=self.memory_format)
        return x, y.pin_memory().to(self.device, non_blocking=True)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    task: Task,
    n_classes: int,
    dev: Device,
    batch_size: int = 256,
    shard: Shard = Shard(),
) -> tuple[float, dict[str, float]]:
    """Validation loss and metrics; across processes each takes every ``world``-th sample and
    the sums are gathered, so every process gets the figures of the whole set."""
    model.eval()
    metrics = Metrics(task, n_classes)
    loss_sum = 0.0
    x, y = x[shard.rank :: shard.world], y[shard.rank :: shard.world]
    with torch.no_grad(), dev.autocast():
        for i in range(0, len(x), batch_size):
            xb, yb = dev.batch(x[i : i + batch_size], y[i : i + batch_size])
            logits = model(xb).float()
            loss_sum += float(F.cross_entropy(logits, yb)) * len(yb)
            metrics.update(logits, yb)
    metrics.reduce(shard)
    (total,) = shard.reduce(torch.tensor([loss_sum, len(x)], dtype=torch.float64))
    return float(total[0]) / max(float(total[1]), 1.0), metrics.result()


def fit(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    config: TrainConfig,
    *,
    task: Task,
    n_classes: int,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[EpochResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    label: str = "training",
    tuned: bool = True,
) -> list[EpochResult]:
    """Train ``model`` on ``data`` = (train_x, train_y, valid_x, valid_y) to the end; see
    :func:`train`."""
    results = []
    for result in train(
        model,
        data,
        config,
        task=task,
        n_classes=n_classes,
        device=device,
        should_stop=should_stop,
        label=label,
        tuned=tuned,
    ):
        results.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return results


def train(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    config: TrainConfig,
    *,
    task: Task,
    n_classes: int,
    device: torch.device | str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    label: str | None = "training",
    tuned: bool = True,
    shard: Shard = Shard(),
) -> Iterator[EpochResult]:
    """Train ``model`` epoch by epoch, yielding each epoch's result as it ends, so that a caller
    can interleave several trainings and drop one midway (a race). ``should_stop`` is asked
    between epochs and raises :class:`Stopped` when it answers yes. ``label=None``: no progress
    bar (a terminal shows one live bar at a time)."""
    train_x, train_y, valid_x, valid_y = data
    dev = Device(torch.device(device), tuned)
    # Each process augments and mixes its own share with its own draws.
    torch.manual_seed(config.seed + 7919 * shard.rank)
    # Same seed on every process: their shares of an epoch are disjoint.
    sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
        TensorDataset(train_y), shard.world, shard.rank, shuffle=True, seed=config.seed
    )
    local_batch = max(1, config.batch_size // shard.world)
    model = model.to(dev.device).to(memory_format=dev.memory_format)
    trained: nn.Module = model
    if shard.world > 1:
        trained = DistributedDataParallel(model, device_ids=[dev.device] if dev.cuda else None)
    steps = math.ceil(len(sampler) / local_batch)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    sched = scheduler(optimizer, config.schedule, config.lr, config.epochs * steps)
    augment = Augmenter(config.augment, train_x.shape[-1], task)
    mix = batch_mixer(*config.mixup, n_classes) if config.mixup else None
    # Interleaved trainings draw from the global generator too: each keeps its own state.
    rng = torch.get_rng_state()
    shown = label is not None and sys.stderr.isatty()
    with Progress(transient=True, disable=not shown) as progress:
        bar = progress.add_task(label or "", total=config.epochs * steps)
        for epoch in range(config.epochs):
            if should_stop is not None and should_stop():
                raise Stopped(f"stopped before epoch {epoch}")
            outside = torch.get_rng_state()
            torch.set_rng_state(rng)
            trained.train()
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler))
            loss_sum = torch.zeros((), device=dev.device)
            for i in range(steps):
                idx = order[i * local_batch : (i + 1) * local_batch]
                xb, yb = augment(train_x[idx], train_y[idx])
                if mix is not None:
                    xb, yb = mix(xb, yb)
                xb, yb = dev.batch(xb, yb)
                with dev.autocast():
                    loss = F.cross_entropy(trained(xb).float(), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                sched.step()
                # Summed on the device: no host sync per step.
                loss_sum += loss.detach() * len(idx)
                progress.advance(bar)
            # The bare model: its forward has no collectives, so uneven shares cannot hang.
            valid_loss, metrics = evaluate(
                model, valid_x, valid_y, task, n_classes, dev, shard=shard
            )
            (seen,) = shard.reduce(torch.tensor([float(loss_sum), len(order)], dtype=torch.float64))
            rng = torch.get_rng_state()
            torch.set_rng_state(outside)
            result = EpochResult(epoch, float(seen[0] / seen[1]), valid_loss, metrics)
            progress.update(bar, description=f"{label} · {result.summary(config.epochs)}")
            yield result
