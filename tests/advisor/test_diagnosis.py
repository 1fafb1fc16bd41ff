"""Diagnosis against the labelled curves in tests/data/curves (real digits training and
hand-written shapes), plus the rules the verdicts rest on."""

import math
import random
from collections import Counter
from typing import Any

import pytest

from app.advisor.diagnosis import (
    Criterion,
    Curves,
    Severity,
    Verdict,
    diagnose,
    infer_criterion,
    resolve_criterion,
)
from tests.conftest import load_curves

CURVES = load_curves()
# Agreement the diagnosis must keep on the labelled set; misses are listed in the failure.
MIN_AGREEMENT = 0.95


def run_curve(curve: dict[str, Any]) -> Verdict:
    epochs = Curves.of(curve["epochs"])
    metric = curve.get("metric")
    criterion = (
        resolve_criterion(metric["name"], metric.get("higher_is_better")) if metric else None
    )
    return diagnose(epochs, criterion or Criterion("valid_loss", False, True)).verdict


def test_the_labelled_set_is_big_and_varied() -> None:
    assert len(CURVES) >= 40
    labels = Counter(c["label"] for c in CURVES)
    assert set(labels) == {v.value for v in Verdict}
    assert sum(c["source"] == "real" for c in CURVES) >= 20


def test_agreement_with_the_labelled_curves() -> None:
    misses = [
        (c["name"], c["label"], run_curve(c).value)
        for c in CURVES
        if run_curve(c).value != c["label"]
    ]
    agreement = 1 - len(misses) / len(CURVES)
    print(f"\ndiagnosis agreement: {len(CURVES) - len(misses)}/{len(CURVES)} = {agreement:.1%}")
    for miss in misses:
        print("  miss:", *miss)
    assert agreement >= MIN_AGREEMENT, misses


@pytest.mark.parametrize("label", [v.value for v in Verdict])
def test_agreement_per_verdict(label: str) -> None:
    """No verdict may be sacrificed for the overall figure."""
    mine = [c for c in CURVES if c["label"] == label]
    hits = sum(run_curve(c).value == label for c in mine)
    assert hits / len(mine) >= 0.8, (label, hits, len(mine))


def series(
    train: list[float],
    valid: list[float],
    metric: list[float] | None = None,
    name: str = "accuracy",
) -> Curves:
    return Curves(
        list(range(len(train))),
        train,
        valid,
        [{name: m} for m in metric] if metric else [{}] * len(train),
    )


def test_valid_loss_above_train_loss_is_not_overfitting() -> None:
    train = [1.0 * 0.7**i + 0.01 for i in range(15)]
    valid = [1.2 * 0.85**i + 0.5 for i in range(15)]
    d = diagnose(series(train, valid))
    assert d.verdict == Verdict.HEALTHY
    assert d.evidence.generalization_gap is not None
    assert d.evidence.generalization_gap > 0.5


def test_evidence_of_an_overfitting_run() -> None:
    train = [1.5 * 0.8**i + 0.01 for i in range(20)]
    valid = [0.6 + 0.004 * (i - 6) ** 2 for i in range(20)]
    d = diagnose(series(train, valid))
    ev = d.evidence
    assert d.verdict == Verdict.OVERFITTING
    assert d.best_epoch == ev.best_epoch == 6
    assert ev.last_epoch == 19
    assert ev.valid_loss_degradation == pytest.approx((valid[-1] - valid[6]) / valid[6])
    assert ev.train_loss_trend == "improving"
    assert ev.severity == Severity.SEVERE
    assert ev.metric_degradation is None
    assert ev.noise is not None
    assert ev.threshold is not None
    assert ev.noise < ev.threshold


def test_noise_decides_what_clearly_worse_means() -> None:
    """The same 8% rise is overfitting on a smooth curve and noise on a jittery one."""
    n = 40
    train = [1.0 * 0.9**i + 0.05 for i in range(n)]
    trend = [0.50 + (0.04 * (i - 20) / 20 if i > 20 else 0.0) for i in range(n)]
    smooth = diagnose(series(train, trend))
    assert smooth.verdict == Verdict.OVERFITTING
    alarms = 0
    for seed in range(50):
        rng = random.Random(seed)
        noisy = diagnose(series(train, [v + rng.gauss(0, 0.06) for v in trend]))
        alarms += noisy.verdict == Verdict.OVERFITTING
        assert noisy.evidence.threshold is not None
        assert noisy.evidence.threshold > smooth.evidence.threshold  # type: ignore[operator]
    assert alarms <= 5


def test_noisy_plateaus_are_healthy_over_many_seeds() -> None:
    false_alarms = 0
    for seed in range(200):
        rng = random.Random(seed)
        n = rng.randint(10, 80)
        train = [1.0 * 0.85**i + 0.1 + rng.gauss(0, 0.005) for i in range(n)]
        valid = [0.4 + 0.5 * 0.7**i + rng.gauss(0, 0.01) for i in range(n)]
        false_alarms += diagnose(series(train, valid)).verdict == Verdict.OVERFITTING
    assert false_alarms <= 4  # <= 2% on pure noise after convergence


def test_metric_direction_decides() -> None:
    n = 20
    train = [0.8**i for i in range(n)]
    valid = [0.5] * n
    acc = [0.9 - 0.004 * max(0, i - 5) for i in range(n)]
    assert diagnose(series(train, valid, acc)).verdict == Verdict.OVERFITTING
    err = [1 - a for a in acc]
    lower = Criterion("error_rate", higher_is_better=False, is_loss=False)
    d = diagnose(series(train, valid, err, name="error_rate"), lower)
    assert d.verdict == Verdict.OVERFITTING
    assert d.evidence.metric_degradation is not None
    assert d.evidence.metric_degradation > 0


def test_criterion_resolution() -> None:
    assert resolve_criterion(None, None).name == "valid_loss"
    assert resolve_criterion("Accuracy", None).higher_is_better
    assert not resolve_criterion("rmse", None).higher_is_better
    assert not resolve_criterion("score", False).higher_is_better
    with pytest.raises(ValueError, match="higher is better"):
        resolve_criterion("score", None)
    assert infer_criterion(Curves([0], [1], [1], [{"accuracy": 0.5, "lr": 0.1}])).name == "accuracy"
    assert infer_criterion(Curves([0], [1], [1], [{"lr": 0.1}])).name == "valid_loss"


def test_too_few_epochs() -> None:
    for n in range(4):
        d = diagnose(series([1.0] * n, [1.0] * n))
        assert d.verdict == Verdict.INSUFFICIENT_DATA
        assert d.best_epoch is None


def test_every_figure_is_finite() -> None:
    """Zero losses must not produce inf in the evidence (it is stored as JSON)."""
    d = diagnose(series([0.0] * 10, [0.0] * 5 + [0.1] * 5))
    for key, value in d.to_dict()["evidence"].items():
        if isinstance(value, float):
            assert math.isfinite(value), key


def test_a_slow_steady_slide_in_a_noisy_curve_is_overfitting() -> None:
    """+0.2% of loss per epoch for 30 epochs under 2% jitter: no window clears 3 sigma, the
    trend does; the same jitter without the slide stays healthy."""
    rng = random.Random(1)
    n = 60
    train = [0.5 * math.exp(-i / 10) + 0.03 + rng.gauss(0, 0.005) for i in range(n)]
    flat = [0.30 + rng.gauss(0, 0.02) for _ in range(n)]
    slide = [v + (0.002 * (i - 30) if i > 30 else 0.0) for i, v in enumerate(flat)]
    assert diagnose(series(train, flat)).verdict == Verdict.HEALTHY
    assert diagnose(series(train, slide)).verdict == Verdict.OVERFITTING
