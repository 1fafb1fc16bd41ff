"""Diagnosis of a training run's curves: overfitting, healthy, underfitting, diverging, or too
few epochs to judge — with the evidence behind the verdict.

Pure Python on purpose (no numpy, no torch): a report holds tens to hundreds of epochs, and at that
size plain lists beat array set-up costs, so a diagnosis costs microseconds on the request path.

The criterion is the validation metric when one is named, else the validation loss. It is turned
into a "lower is better" series ``y`` so that one code path serves both directions. Overfitting
means ``y`` got clearly worse after its best epoch while the training loss did not get worse:
"clearly" is measured against the curve's own epoch-to-epoch jitter and a minimum relative change,
so a noisy plateau whose best epoch is merely a lucky dip does not count.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate
from operator import add, sub
from statistics import median
from typing import Any, NamedTuple


class Verdict(StrEnum):
    OVERFITTING = "overfitting"
    HEALTHY = "healthy"
    UNDERFITTING = "underfitting"
    DIVERGING = "diverging"
    INSUFFICIENT_DATA = "insufficient_data"


class Severity(StrEnum):
    NONE = "none"
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


class Curves(NamedTuple):
    """A run's epochs as columns: what the diagnosis computes on, built in one pass per column."""

    epochs: list[int]
    train_loss: list[float]
    valid_loss: list[float]
    metrics: list[Mapping[str, float]]

    @classmethod
    def of(cls, records: Sequence[Mapping[str, Any]]) -> "Curves":
        """From epoch records as reported: ``{"epoch", "train_loss", "valid_loss", "metrics"}``."""
        return cls(
            [r["epoch"] for r in records],
            [r["train_loss"] for r in records],
            [r["valid_loss"] for r in records],
            [r.get("metrics") or {} for r in records],
        )

    def __len__(self) -> int:  # the number of epochs, not of columns
        return len(self.epochs)


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


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Tuning knobs: a change is "clear" when it exceeds both a relative floor and ``noise_z``
    times the jitter of the curve. Losses move proportionally more than bounded metrics, hence
    separate floors."""

    min_epochs: int = 4
    noise_z: float = 3.0
    min_rel_loss: float = 0.05
    min_rel_metric: float = 0.015
    # Relative degradation at which overfitting becomes moderate / severe.
    severity_loss: tuple[float, float] = (0.15, 0.5)
    severity_metric: tuple[float, float] = (0.04, 0.12)
    # Training loss that fell by less than this fraction of its first value did not learn.
    not_learning_drop: float = 0.05
    # Underfit: the training loss ends above this share of its first value while sitting within
    # ``underfit_gap`` (relative) of the validation loss: the model has not fit the data it sees.
    underfit_share: float = 0.4
    underfit_gap: float = 0.1
    # Training loss whose tail rose by this fraction of its own range is diverging.
    diverging_share: float = 0.25
    train_rise_rel: float = 0.10


DEFAULT_THRESHOLDS = Thresholds()


class Evidence(NamedTuple):
    criterion: str
    higher_is_better: bool
    n_epochs: int
    best_epoch: int | None
    last_epoch: int | None
    best_value: float | None
    last_value: float | None
    # Positive means worse, as a fraction of the best value.
    metric_degradation: float | None
    valid_loss_degradation: float | None
    # Relative change of the training loss from the best epoch to the end; negative is improving.
    train_loss_change: float | None
    train_loss_trend: str | None
    generalization_gap: float | None
    gap_ratio: float | None
    noise: float | None
    threshold: float | None
    tail_epochs: int | None
    still_improving: bool
    severity: Severity


@dataclass(frozen=True, slots=True)
class Diagnosis:
    verdict: Verdict
    best_epoch: int | None
    summary: str
    evidence: Evidence

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``dataclasses.asdict`` deep-copies and costs 10x more)."""
        evidence = self.evidence._asdict()
        evidence["severity"] = self.evidence.severity.value
        return {
            "verdict": self.verdict.value,
            "best_epoch": self.best_epoch,
            "summary": self.summary,
            "evidence": evidence,
        }


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


def _rolling_mean(y: Sequence[float], width: int) -> list[float]:
    """Means of every ``width`` consecutive values (trailing windows), in O(n)."""
    if width <= 1 or len(y) < width:
        return list(y)
    sums = list(accumulate(y, initial=0.0))
    return [(b - a) / width for a, b in zip(sums, sums[width:], strict=False)]


def _noise(y: Sequence[float]) -> float:
    """Robust epoch-to-epoch jitter of the later part of a curve.

    Second differences cancel a locally linear trend, so a steadily rising or falling curve is not
    mistaken for noise; MAD/0.6745 makes it robust to a few spikes; /sqrt(6) turns the variance of
    a second difference of white noise back into the noise's own scale."""
    start = max(1, len(y) // 3)
    if len(y) - start < 4:
        start = 1
    mid = y[start:-1]
    # |a - 2b + c| over consecutive triples, with C-level maps: this runs on every report.
    d2: list[float] = list(
        map(abs, map(sub, map(add, y[start - 1 :], y[start + 1 :]), map(add, mid, mid)))
    )
    if not d2:
        return 0.0
    return 1.4826 * float(median(d2)) / math.sqrt(6)


def _clear_rise(y: Sequence[float], z: float, floor: float) -> bool:
    """A least-squares trend that rises by more than ``floor`` over ``y`` and whose slope is
    more than ``z`` standard errors above zero."""
    n = len(y)
    if n < 6:
        return False
    mx, my = (n - 1) / 2, sum(y) / n
    sxx = n * (n * n - 1) / 12
    slope = sum((i - mx) * (v - my) for i, v in enumerate(y)) / sxx
    if slope * (n - 1) <= floor:
        return False
    residual = sum((v - my - slope * (i - mx)) ** 2 for i, v in enumerate(y))
    stderr = math.sqrt(residual / (n - 2) / sxx)
    return stderr == 0 or slope > z * stderr


def _mean(y: Sequence[float]) -> float:
    return sum(y) / len(y)


def _argmin(y: list[float]) -> int:
    """First index of the smallest value."""
    return y.index(min(y))


def _rel(delta: float, reference: float) -> float:
    """``delta`` as a fraction of ``reference``; a zero reference is floored so the figure stays
    finite (and JSON-safe)."""
    return delta / max(abs(reference), 1e-12)


def _severity(rel: float, bounds: tuple[float, float]) -> Severity:
    if rel < bounds[0]:
        return Severity.MILD
    if rel < bounds[1]:
        return Severity.MODERATE
    return Severity.SEVERE


def diagnose(
    curves: Curves,
    criterion: Criterion | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Diagnosis:
    """Diagnose epochs given in order. ``criterion`` defaults to :func:`infer_criterion`."""
    crit = criterion or infer_criterion(curves)
    n = len(curves)
    if n < thresholds.min_epochs:
        return _insufficient(curves, crit, thresholds)

    epochs, train, valid = curves.epochs, curves.train_loss, curves.valid_loss
    if crit.is_loss:
        raw = valid
    else:
        name = crit.name
        raw = [m[name] for m in curves.metrics]
    y = [-v for v in raw] if crit.higher_is_better else raw

    k = max(1, min(5, n // 4))  # tail length: the "end of training" we judge
    best = _argmin(y)
    # The best level is the best k-epoch window, so it is compared like with like against the
    # k-epoch tail: a single lucky epoch does not make the rest of the run look degraded.
    windows = _rolling_mean(y, k)
    best_window = _argmin(windows)
    noise = _noise(y)
    scale = abs(raw[best]) if abs(raw[best]) > 1e-12 else (max(y) - min(y)) or 1.0
    min_rel = thresholds.min_rel_loss if crit.is_loss else thresholds.min_rel_metric
    threshold = max(min_rel * scale, thresholds.noise_z * noise)

    tail = _mean(y[-k:])
    degradation = tail - windows[best_window]
    # best_window indexes windows ending at best_window + k - 1; it must end before the tail.
    best_ends = best_window + k - 1
    degraded = (
        best_ends < n - k
        and (
            degradation > threshold
            # A slow, steady slide in a noisy curve: no window clears 3 sigma, the trend does.
            or _clear_rise(y[best_ends:], thresholds.noise_z, min_rel * scale)
        )
    )

    # Still improving: the tail beats the window just before it by a clear margin.
    before = y[-2 * k : -k] if n >= 2 * k + 1 else y[:-k]
    still_improving = bool(before) and _mean(before) - tail > threshold

    train_min_at = _argmin(train)
    train_tail = _mean(train[-k:])
    train_rise = train_tail - train[train_min_at]
    train_range = max(train) - train[train_min_at]
    # Worse beyond noise, or doubled: an oscillating blow-up is its own "noise".
    train_worsening = train_min_at < n - k and (
        train_rise > train[train_min_at]
        or (
            train_rise > thresholds.train_rise_rel * train[train_min_at]
            and train_rise > thresholds.noise_z * _noise(train)
        )
    )
    train_change = _rel(train_tail - train[best], train[best])
    trend = "improving" if train_change < -0.01 else "worsening" if train_change > 0.01 else "flat"

    valid_change = _rel(valid[-1] - valid[best], valid[best])
    metric_change = None if crit.is_loss else _rel(y[-1] - y[best], raw[best])
    rel_degradation = _rel(degradation, scale)

    severity = Severity.NONE
    if train_worsening and (train_rise >= thresholds.diverging_share * train_range or degraded):
        verdict = Verdict.DIVERGING
        summary = (
            f"Training loss rose from {train[train_min_at]:.4g} (epoch "
            f"{epochs[train_min_at]}) to {train_tail:.4g} at the end: the optimisation "
            "itself is getting worse. Lower the learning rate."
        )
    elif degraded:
        verdict = Verdict.OVERFITTING
        bounds = thresholds.severity_loss if crit.is_loss else thresholds.severity_metric
        severity = _severity(rel_degradation, bounds)
        summary = (
            f"{crit.name} was best at epoch {epochs[best]} ({raw[best]:.4g}) and ended "
            f"{abs(_rel(y[-1] - y[best], raw[best])):.1%} worse ({raw[-1]:.4g}) while the "
            f"training loss kept "
            f"{'improving' if trend == 'improving' else 'steady'}: {severity} overfitting."
        )
    elif _rel(train[0] - train[train_min_at], train[0]) < thresholds.not_learning_drop or (
        train_tail > thresholds.underfit_share * train[0]
        and _mean(valid[-k:]) - train_tail < thresholds.underfit_gap * train_tail
    ):
        verdict = Verdict.UNDERFITTING
        summary = (
            "The model does not fit even its training data: its training loss ended at "
            f"{train_tail / train[0]:.0%} of its first value and close to the validation loss "
            f"({train[-1]:.4g} vs {valid[-1]:.4g}"
            f"{', still improving' if still_improving else ''}): train longer, use a larger "
            "model or less regularization."
        )
    else:
        verdict = Verdict.HEALTHY
        summary = (
            f"{crit.name} is at or near its best ({raw[best]:.4g} at epoch {epochs[best]})"
            f"{' and still improving' if still_improving else ''}; no sign of overfitting."
        )
    return Diagnosis(
        verdict=verdict,
        best_epoch=epochs[best],
        summary=summary,
        evidence=Evidence(
            criterion=crit.name,
            higher_is_better=crit.higher_is_better,
            n_epochs=n,
            best_epoch=epochs[best],
            last_epoch=epochs[-1],
            best_value=raw[best],
            last_value=raw[-1],
            metric_degradation=metric_change,
            valid_loss_degradation=valid_change,
            train_loss_change=train_change,
            train_loss_trend=trend,
            generalization_gap=valid[-1] - train[-1],
            gap_ratio=valid[-1] / train[-1] if train[-1] > 0 else None,
            noise=noise,
            threshold=threshold,
            tail_epochs=k,
            still_improving=still_improving,
            severity=severity,
        ),
    )


def _insufficient(curves: Curves, crit: Criterion, thresholds: Thresholds) -> Diagnosis:
    n = len(curves)
    return Diagnosis(
        verdict=Verdict.INSUFFICIENT_DATA,
        best_epoch=None,
        summary=(
            f"{n} epoch{'s' if n != 1 else ''} reported; at least {thresholds.min_epochs} are "
            "needed to tell a trend from noise. Train longer and report again."
        ),
        evidence=Evidence(
            criterion=crit.name,
            higher_is_better=crit.higher_is_better,
            n_epochs=n,
            best_epoch=None,
            last_epoch=curves.epochs[-1] if n else None,
            best_value=None,
            last_value=None,
            metric_degradation=None,
            valid_loss_degradation=None,
            train_loss_change=None,
            train_loss_trend=None,
            generalization_gap=curves.valid_loss[-1] - curves.train_loss[-1] if n else None,
            gap_ratio=None,
            noise=None,
            threshold=None,
            tail_epochs=None,
            still_improving=False,
            severity=Severity.NONE,
        ),
    )
