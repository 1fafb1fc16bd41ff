"""A run's curves as the diagnosis reads them, and what "better" and "chance" mean for them."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

_EPOCH, _TRAIN, _VALID = itemgetter("epoch"), itemgetter("train_loss"), itemgetter("valid_loss")


# An evaluation's epoch: whole, or fractional for several evaluations an epoch.
Epoch = int | float


class Curves(NamedTuple):
    """A run's evaluations as columns: what the diagnosis computes on, built in one pass per
    column. ``epochs`` may be fractional (several evaluations an epoch); ``steps`` and ``lr``
    are empty when the report carries none."""

    epochs: list[Epoch]
    train_loss: list[float]
    valid_loss: list[float]
    metrics: list[Mapping[str, float]]
    steps: list[int | None] = []
    lr: list[float | None] = []
    # Evaluations reported without a training loss, whose value was filled from neighbours.
    train_missing: int = 0

    @classmethod
    def of(cls, records: Sequence[Mapping[str, Any]]) -> "Curves":
        """From evaluation records as reported: ``{"epoch", "train_loss", "valid_loss",
        "metrics"}``, with ``"step"`` and ``"lr"`` when known and ``train_loss`` None when no
        training loss was logged since the evaluation before."""
        # itemgetter maps run at C speed: this runs on every report.
        train = list(map(_TRAIN, records))
        valid = list(map(_VALID, records))
        missing = train.count(None)
        # What the latest evaluation lacks, the run is read without: a step-based run names its
        # latest step, and a schedule is judged by the rate in force now.
        last = records[-1] if records else {}
        return cls(
            list(map(_EPOCH, records)),
            _filled(train, valid) if missing else train,
            valid,
            [r.get("metrics") or {} for r in records],
            [r.get("step") for r in records] if last.get("step") is not None else [],
            [r.get("lr") for r in records] if last.get("lr") is not None else [],
            missing,
        )

    def metric(self, name: str) -> list[float]:
        """One metric's values, epoch by epoch."""
        return list(map(itemgetter(name), self.metrics))

    def head(self, n: int) -> "Curves":
        """The first ``n`` evaluations: the run as it stood then."""
        return Curves(
            self.epochs[:n],
            self.train_loss[:n],
            self.valid_loss[:n],
            self.metrics[:n],
            self.steps[:n],
            self.lr[:n],
            self.train_missing,
        )

    def at(self, i: int) -> str:
        """How the answers name evaluation ``i``: "epoch 3", or "step 800" for a step-based run."""
        step = self.steps[i] if self.steps else None
        return f"step {step}" if step is not None else f"epoch {self.epochs[i]:g}"

    def __len__(self) -> int:  # the number of evaluations, not of columns
        return len(self.epochs)


def _filled(train: list[float | None], valid: list[float]) -> list[float]:
    """Training losses with the missing ones filled in: linearly between the known neighbours,
    or the nearest known one at either end; the validation loss when none is known at all."""
    known = [(i, v) for i, v in enumerate(train) if v is not None]
    if not known:
        return list(valid)
    out: list[float] = []
    after = 0  # index in ``known`` of the first known evaluation at or after i
    for i in range(len(train)):
        while after < len(known) and known[after][0] < i:
            after += 1
        if after == len(known) or known[after][0] == i or after == 0:
            out.append(known[min(after, len(known) - 1)][1])
            continue
        (i0, a), (i1, b) = known[after - 1], known[after]
        out.append(a + (b - a) * (i - i0) / (i1 - i0))
    return out


@dataclass(frozen=True, slots=True)
class Criterion:
    """What "better" means for this run: a named validation metric or the validation loss."""

    name: str
    higher_is_better: bool
    is_loss: bool


VALID_LOSS = Criterion("valid_loss", higher_is_better=False, is_loss=True)

# Directions of common metric names, so a report that names only the metric still gets diagnosed.
KNOWN_METRICS: dict[str, bool] = {
    "accuracy": True,
    "acc": True,
    "accuracy_multi": True,
    "top1": True,
    "top5": True,
    "balanced_accuracy": True,
    "f1": True,
    "f1_score": True,
    "fbeta": True,
    "precision": True,
    "recall": True,
    "auc": True,
    "roc_auc": True,
    "ap": True,
    "map": True,
    "dice": True,
    "iou": True,
    "jaccard": True,
    "miou": True,
    "r2": True,
    "mcc": True,
    "psnr": True,
    "ssim": True,
    "error_rate": False,
    "error": False,
    "top1_error": False,
    "top5_error": False,
    "mse": False,
    "rmse": False,
    "mae": False,
    "perplexity": False,
    "cer": False,
    "wer": False,
}

# What guessing scores on metrics whose chance level follows from the number of classes alone
# (uniform guessing; a skewed class balance only raises the bar, so this errs towards "learned").
_CHANCE_BY_CLASSES: dict[str, Callable[[int], float]] = {
    "accuracy": lambda k: 1 / k,
    "acc": lambda k: 1 / k,
    "top1": lambda k: 1 / k,
    "balanced_accuracy": lambda k: 1 / k,
    "top5": lambda k: min(1.0, 5 / k),
    "error_rate": lambda k: 1 - 1 / k,
    "error": lambda k: 1 - 1 / k,
    "top1_error": lambda k: 1 - 1 / k,
    "top5_error": lambda k: max(0.0, 1 - 5 / k),
    "auc": lambda k: 0.5,
    "roc_auc": lambda k: 0.5,
    "mcc": lambda k: 0.0,
}


# The best a model can score on bounded metrics: 1 for scores and agreements, 0 for error rates.
# Unbounded metrics (losses, MAE, perplexity) have no ceiling the diagnosis can know.
_CEILINGS: dict[str, float] = {
    **dict.fromkeys(("accuracy", "acc", "top1", "top5", "balanced_accuracy", "f1"), 1.0),
    **dict.fromkeys(("f1_score", "fbeta", "precision", "recall", "auc", "roc_auc"), 1.0),
    **dict.fromkeys(("ap", "map", "dice", "iou", "jaccard", "miou", "mcc"), 1.0),
    **dict.fromkeys(("error_rate", "error", "top1_error", "top5_error", "cer", "wer"), 0.0),
}


def ceiling(metric: str) -> float | None:
    """The best value the metric can take, when it is bounded."""
    return _CEILINGS.get(metric.lower())


def chance_level(metric: str, n_classes: int | None) -> float | None:
    """The metric's value for a model that guesses, when the report lets us know it."""
    rule = _CHANCE_BY_CLASSES.get(metric.lower())
    if rule is None or (n_classes is None and metric.lower() not in ("auc", "roc_auc", "mcc")):
        return None
    return rule(max(n_classes or 2, 2))


def resolve_criterion(name: str | None, higher_is_better: bool | None) -> Criterion:
    """The criterion a report asks for; ``higher_is_better`` may be left to the known-metric table.

    Raises ValueError (for the API to turn into a 4xx) when the direction cannot be known."""
    if name is None or name == "valid_loss":
        return VALID_LOSS
    if higher_is_better is None:
        known = KNOWN_METRICS.get(name.lower())
        if known is None:
            raise ValueError(f"metric '{name}' is not a known metric: say whether higher is better")
        higher_is_better = known
    return Criterion(name, higher_is_better, is_loss=False)


def infer_criterion(curves: Curves) -> Criterion:
    """With no metric named, use the single well-known metric every epoch carries, else the loss."""
    if not curves.metrics:
        return VALID_LOSS
    shared = set(curves.metrics[0])
    for m in curves.metrics[1:]:
        shared &= m.keys()
    known = [k for k in shared if k.lower() in KNOWN_METRICS]
    if len(known) == 1:
        return Criterion(known[0], KNOWN_METRICS[known[0].lower()], is_loss=False)
    return VALID_LOSS
