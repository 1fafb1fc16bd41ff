"""A run's curves as the diagnosis reads them, and what "better" and "chance" mean for them."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
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


class Known(NamedTuple):
    """What the diagnosis knows of a metric by its name: its direction, the best value it can
    take when it is bounded, and what guessing scores, from the number of classes."""

    higher_is_better: bool
    ceiling: float | None = None
    chance: Callable[[int], float] | None = None
    # The chance level holds whatever the number of classes (an AUC, a correlation, a binary
    # accuracy), so it is known without the report's class count.
    chance_without_classes: bool = False


def _accuracy(k: int) -> float:
    return 1 / k


def _error(k: int) -> float:
    return 1 - 1 / k


def _constant(level: float) -> Callable[[int], float]:
    return lambda _k: level


_SCORE = Known(True, 1.0)
_ACCURACY = Known(True, 1.0, _accuracy)
_ERROR = Known(False, 0.0, _error)
_AGREEMENT = Known(True, 1.0, _constant(0.0), chance_without_classes=True)
_RANKING = Known(True, 1.0, _constant(0.5), chance_without_classes=True)
_UNBOUNDED_LOWER = Known(False)

# Common metric names, as Keras, fastai, Hugging Face (evaluate), torchmetrics and Ultralytics
# (accuracy_top1, mAP50-95) log them (read in any case), so a report that names only the metric
# still gets diagnosed, and judged against what its task allows. Unbounded metrics (errors of a
# regression, perplexity) have no ceiling; ones some libraries report in percent (ROUGE in the
# Trainer's examples) have none either, and BLEU and SQuAD's exact match, which come either way,
# are left out.
METRICS: dict[str, Known] = {
    **dict.fromkeys(
        (
            "accuracy",
            "acc",
            "top1",
            "accuracy_top1",
            "balanced_accuracy",
            "sparse_categorical_accuracy",
            "categorical_accuracy",
            "multiclass_accuracy",
            "balanced_accuracy_score",
        ),
        _ACCURACY,
    ),
    "binary_accuracy": Known(True, 1.0, _constant(0.5), chance_without_classes=True),
    **dict.fromkeys(("top5", "accuracy_top5"), Known(True, 1.0, lambda k: min(1.0, 5 / k))),
    **dict.fromkeys(
        (
            "accuracy_multi",
            "top_k_accuracy",
            "top_k_categorical_accuracy",
            "sparse_top_k_categorical_accuracy",
            "foreground_acc",
            "acc_camvid",
        ),
        _SCORE,
    ),
    **dict.fromkeys(
        ("f1", "f1_score", "fbeta", "fbeta_score", "precision", "recall", "precision_score"),
        _SCORE,
    ),
    **dict.fromkeys(
        ("recall_score", "ap", "map", "map50", "map75", "map50-95", "average_precision"), _SCORE
    ),
    **dict.fromkeys(
        ("dice", "dice_multi", "iou", "mean_iou", "miou", "jaccard", "jaccard_index"), _SCORE
    ),
    "jaccard_coeff": _SCORE,
    **dict.fromkeys(("auc", "roc_auc", "roc_auc_score"), _RANKING),
    **dict.fromkeys(
        ("mcc", "matthews_correlation", "matthews_corr_coef", "matthews_corrcoef"), _AGREEMENT
    ),
    "cohen_kappa_score": _AGREEMENT,
    **dict.fromkeys(("pearson", "pearsonr", "spearman", "spearmanr"), _AGREEMENT),
    "ssim": _SCORE,
    **dict.fromkeys(
        ("r2", "r2_score", "psnr", "rouge1", "rouge2", "rougel", "rougelsum"), Known(True)
    ),
    **dict.fromkeys(("error_rate", "error", "top1_error"), _ERROR),
    "top5_error": Known(False, 0.0, lambda k: max(0.0, 1 - 5 / k)),
    **dict.fromkeys(("cer", "wer"), Known(False, 0.0)),
    **dict.fromkeys(("mse", "rmse", "mae", "msle", "mape", "perplexity"), _UNBOUNDED_LOWER),
    **dict.fromkeys(
        (
            "mean_squared_error",
            "root_mean_squared_error",
            "mean_absolute_error",
            "mean_absolute_percentage_error",
            "mean_squared_logarithmic_error",
            "exp_rmspe",
        ),
        _UNBOUNDED_LOWER,
    ),
}

# What a framework puts before a metric's name when it reports it on the validation data
# (Keras' val_accuracy, the Trainer's eval_f1): the same metric.
VALIDATION_PREFIXES = ("val_", "valid_", "validation_", "eval_", "test_")


# Bounded, as modality.resolve's: the names come from reports, and a client may send any.
@lru_cache(maxsize=1024)
def known_metric(name: str) -> Known | None:
    """What the table knows of a metric named ``name`` (in any case, with or without a
    validation prefix). Cached: a report's metric is looked up several times a look."""
    lower = name.lower()
    prefix = next((p for p in VALIDATION_PREFIXES if lower.startswith(p)), "")
    return METRICS.get(lower) or METRICS.get(lower[len(prefix) :])


def ceiling(metric: str) -> float | None:
    """The best value the metric can take, when it is bounded."""
    known = known_metric(metric)
    return known.ceiling if known else None


def chance_level(metric: str, n_classes: int | None) -> float | None:
    """The metric's value for a model that guesses, when the report lets us know it."""
    known = known_metric(metric)
    if known is None or known.chance is None:
        return None
    if n_classes is None and not known.chance_without_classes:
        return None
    return known.chance(max(n_classes or 2, 2))


def resolve_criterion(name: str | None, higher_is_better: bool | None) -> Criterion:
    """The criterion a report asks for; ``higher_is_better`` may be left to the known-metric table.

    Raises ValueError (for the API to turn into a 4xx) when the direction cannot be known."""
    if name is None or name == "valid_loss":
        return VALID_LOSS
    if higher_is_better is None:
        known = known_metric(name)
        if known is None:
            raise ValueError(f"metric '{name}' is not a known metric: say whether higher is better")
        higher_is_better = known.higher_is_better
    return Criterion(name, higher_is_better, is_loss=False)


def infer_criterion(curves: Curves) -> Criterion:
    """With no metric named, use the single well-known metric every epoch carries, else the loss."""
    if not curves.metrics:
        return VALID_LOSS
    shared = set(curves.metrics[0])
    for epoch in curves.metrics[1:]:
        shared &= epoch.keys()
    known = [(k, m) for k in shared if (m := known_metric(k)) is not None]
    if len(known) == 1:
        name, metric = known[0]
        return Criterion(name, metric.higher_is_better, is_loss=False)
    return VALID_LOSS
