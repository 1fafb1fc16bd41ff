"""The training loop: AdamW, one-cycle (or constant / cosine) schedule, augmentation and
MixUp/CutMix, per-epoch train loss, valid loss and metrics — accuracy for classification, IoU
and Dice for segmentation, ``accuracy_multi`` (each label's sigmoid at 0.5) and F-beta (beta 2,
averaged over images, as fastai's ``FBetaMulti``) for multi-label, trained with binary cross
entropy on a sigmoid per class.

The data are float tensors (bundled and generated data), augmented per sample on the host, or
:class:`app.training.data.Images` (read from files): uint8 batches read by DataLoader workers,
copied to the device and normalised and augmented there, the whole batch at once.

One code path for every device and for one process or several. On CUDA it adds what pays there:
bf16 autocast, channels-last memory, pinned host batches copied without blocking, and cuDNN
autotuning. Across processes (``Shard``, see ``app.training.distributed``) the model is wrapped in
DistributedDataParallel and each process trains on its share of every batch, so the recipe's batch
size stays the global one and the schedule takes the same steps as on one device. Seeded, it
repeats exactly on the CPU.
"""

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from rich.progress import Progress
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, TensorDataset

from app.builder.recipe import Augment, Task
from app.training.augment import Augmenter, BatchAugmenter, batch_mixer
from app.training.data import Images, normalize

# Images whose labels F-beta weighs: recall counts beta^2 times as much as precision.
FBETA = 2.0


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
        self.fbeta = 0.0  # summed over images (multi-label)
        self.confusion = torch.zeros(n_classes, n_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        target = target.cpu()
        if self.task == "multi_label":
            said, truth = logits.cpu() > 0, target > 0.5  # a sigmoid above 0.5
            self.correct += int((said == truth).sum())
            self.total += truth.numel()
            tp = (said & truth).sum(1).double()
            fp, fn = (said & ~truth).sum(1).double(), (~said & truth).sum(1).double()
            b2 = FBETA**2
            score = (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp).clamp(min=1)
            # An image with no label that got none is right, not undefined.
            self.fbeta += float(torch.where(tp + fp + fn == 0, 1.0, score).sum())
            return
        pred = logits.argmax(dim=1).cpu()
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
        counts, self.confusion, (fbeta,) = shard.reduce(
            counts, self.confusion, torch.tensor([self.fbeta], dtype=torch.float64)
        )
        self.correct, self.total, self.fbeta = int(counts[0]), int(counts[1]), float(fbeta)

    def result(self) -> dict[str, float]:
        if self.task == "multi_label":
            images = self.total // max(self.n_classes, 1)
            return {
                "accuracy_multi": self.correct / max(self.total, 1),
                "fbeta": self.fbeta / max(images, 1),
            }
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


def loss_of(task: Task, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross entropy over classes (or pixels' classes); binary cross entropy for each label of
    a multi-label image (a sigmoid per class)."""
    if task == "multi_label":
        return F.binary_cross_entropy_with_logits(logits, target.float())
    return F.cross_entropy(logits, target)


Reader = Callable[[Sequence[torch.Tensor]], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def reader(x: torch.Tensor | Images, y: torch.Tensor, dev: Device) -> Reader:
    """What reads batches (each given as a tensor of positions) of ``x`` and ``y``."""
    if isinstance(x, Images):
        return x.batches(pin=dev.cuda)
    return lambda chunks: ((x[idx], y[idx]) for idx in chunks)


def evaluate(
    model: nn.Module,
    x: torch.Tensor | Images,
    y: torch.Tensor,
    task: Task,
    n_classes: int,
    dev: Device,
    batch_size: int = 256,
    shard: Shard = Shard(),
    read: Reader | None = None,
) -> tuple[float, dict[str, float]]:
    """Validation loss and metrics; across processes each takes every ``world``-th sample and
    the sums are gathered, so every process gets the figures of the whole set. ``read``: the
    reader of ``x`` (made here unless given, to keep its workers across epochs)."""
    model.eval()
    metrics = Metrics(task, n_classes)
    loss_sum = 0.0
    mine = torch.arange(shard.rank, len(x), shard.world)
    files = isinstance(x, Images)
    with torch.no_grad(), dev.autocast():
        for batch in (read or reader(x, y, dev))(torch.split(mine, batch_size)):
            xb, yb = dev.batch(*batch)
            if files:
                xb = normalize(xb)
            logits = model(xb).float()
            loss_sum += float(loss_of(task, logits, yb)) * len(yb)
            metrics.update(logits, yb)
    metrics.reduce(shard)
    (total,) = shard.reduce(torch.tensor([loss_sum, len(mine)], dtype=torch.float64))
    return float(total[0]) / max(float(total[1]), 1.0), metrics.result()


def fit(
    model: nn.Module,
    data: tuple[Any, Any, Any, Any],
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
    data: tuple[Any, Any, Any, Any],
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
        TensorDataset(torch.empty(len(train_x), 0)),
        shard.world,
        shard.rank,
        shuffle=True,
        seed=config.seed,
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
    files = isinstance(train_x, Images)
    # Images read from files are augmented on the device, a batch at once; tensors on the host,
    # per sample, as they always were.
    augment = Augmenter(config.augment, train_x.shape[-1], task)
    on_device = BatchAugmenter(config.augment, task)
    mix = batch_mixer(*config.mixup, n_classes, task) if config.mixup else None
    read_train, read_valid = reader(train_x, train_y, dev), reader(valid_x, valid_y, dev)

    def ready(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch augmented, mixed and on the device."""
        if files:
            xb, yb = on_device(*dev.batch(xb, yb), normalize)
        else:
            xb, yb = augment(xb, yb)
        if mix is not None:
            xb, yb = mix(xb, yb)
        return (xb, yb) if files else dev.batch(xb, yb)

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
            chunks = [order[i * local_batch : (i + 1) * local_batch] for i in range(steps)]
            for batch in read_train(chunks):
                xb, yb = ready(*batch)
                with dev.autocast():
                    loss = loss_of(task, trained(xb).float(), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                sched.step()
                # Summed on the device: no host sync per step.
                loss_sum += loss.detach() * len(xb)
                progress.advance(bar)
            # The bare model: its forward has no collectives, so uneven shares cannot hang.
            valid_loss, metrics = evaluate(
                model, valid_x, valid_y, task, n_classes, dev, shard=shard, read=read_valid
            )
            (seen,) = shard.reduce(torch.tensor([float(loss_sum), len(order)], dtype=torch.float64))
            rng = torch.get_rng_state()
            torch.set_rng_state(outside)
            result = EpochResult(epoch, float(seen[0] / seen[1]), valid_loss, metrics)
            progress.update(bar, description=f"{label} · {result.summary(config.epochs)}")
            yield result
