"""Whether a remedy helped: verdicts from paired per-seed differences, when to stop adding
seeds, and which racing candidates to stop at a checkpoint. Pure arithmetic on metric values
(higher is better); the worker trains, this module judges.

A difference is ``candidate - baseline`` for one seed (same data, schedule and initial seed).
``confirmed`` needs the 95% interval of the mean difference above zero. ``refuted`` needs the
interval below zero (clearly worse) or, with at least ``EQUIVALENCE_SEEDS`` pairs, below the
smallest effect worth having (any gain is too small to matter). Anything else is
``inconclusive``: a remedy is never refuted by a negative mean that noise could explain.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean, stdev
from typing import Literal

Verdict = Literal["confirmed", "refuted", "inconclusive"]
Criterion = Literal["best", "final"]

# Two-sided 95% Student t quantiles by degrees of freedom (1.96 beyond the table).
T95 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042,
}  # fmt: skip
# Fewer pairs than this cannot rule out a worthwhile gain: their interval is too wide to mean it.
EQUIVALENCE_SEEDS = 3
# The smallest gain in accuracy or IoU worth a change to the recipe, unless the request says.
SMALLEST_EFFECT = 0.01


def t95(df: int) -> float:
    if df > 30:
        return 1.96
    return T95[max(k for k in T95 if k <= df)]


@dataclass(frozen=True, slots=True)
class Comparison:
    """The paired comparison of one criterion (best epoch or final epoch)."""

    differences: tuple[float, ...]
    effect: float
    interval: tuple[float, float] | None
    verdict: Verdict
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "differences": list(self.differences),
            "effect": self.effect,
            "interval": list(self.interval) if self.interval else None,
            "verdict": self.verdict,
            "reason": self.reason,
        }


def span(mean: float, spread: float, n: int) -> tuple[float, float]:
    """The 95% t-interval of a mean of ``n`` values with standard deviation ``spread``."""
    half = t95(n - 1) * spread / math.sqrt(n)
    return (mean - half, mean + half)


def interval(diffs: Sequence[float]) -> tuple[float, float] | None:
    """The 95% interval of the mean difference; None for a single pair."""
    if len(diffs) < 2:
        return None
    return span(fmean(diffs), stdev(diffs), len(diffs))


def compare(
    baseline: Sequence[float], candidate: Sequence[float], smallest_effect: float = SMALLEST_EFFECT
) -> Comparison:
    """The verdict on ``candidate`` against ``baseline``, paired by position (seed)."""
    diffs = tuple(c - b for b, c in zip(baseline, candidate, strict=True))
    if not diffs:
        raise ValueError("no paired results to compare")
    mean, span = fmean(diffs), interval(diffs)
    n = len(diffs)
    if span is None:
        return Comparison(diffs, mean, None, "inconclusive", "one seed gives no interval")
    low, high = span
    if low > 0:
        return Comparison(
            diffs, mean, span, "confirmed", f"the interval lies above zero ({n} seeds)"
        )
    if high < 0:
        return Comparison(diffs, mean, span, "refuted", f"the interval lies below zero ({n} seeds)")
    if n >= EQUIVALENCE_SEEDS and high < smallest_effect:
        reason = f"the interval excludes any gain of {smallest_effect:g} or more ({n} seeds)"
        return Comparison(diffs, mean, span, "refuted", reason)
    reason = f"the interval straddles zero ({n} seeds)"
    if n < EQUIVALENCE_SEEDS and high < smallest_effect:
        reason += f"; {EQUIVALENCE_SEEDS} seeds are needed to rule out a worthwhile gain"
    return Comparison(diffs, mean, span, "inconclusive", reason)


@dataclass(frozen=True, slots=True)
class Paired:
    """One seed's pair of trials: the best-epoch and final-epoch metric of each."""

    seed: int
    baseline_best: float
    baseline_final: float
    candidate_best: float
    candidate_final: float


def judge(
    pairs: Sequence[Paired], criterion: Criterion, smallest_effect: float = SMALLEST_EFFECT
) -> dict[Criterion, Comparison]:
    """Both comparisons; the verdict is read from ``criterion``'s, the other is reported."""
    best = compare(
        [p.baseline_best for p in pairs], [p.candidate_best for p in pairs], smallest_effect
    )
    final = compare(
        [p.baseline_final for p in pairs], [p.candidate_final for p in pairs], smallest_effect
    )
    return {"best": best, "final": final} if criterion == "best" else {"final": final, "best": best}


Stop = Literal["settled", "futile", "max_seeds"]
# Judging futility needs a spread estimated from at least this many pairs.
FUTILITY_SEEDS = 3
# Accuracy moves in steps of 1/n_valid, so two pairs often differ by exactly the same amount: a
# spread of zero and an interval of no width. Stopping early needs the verdict to hold with the
# spread floored at the smallest effect (two pairs) or half of it (more); never below this.
MIN_SPREAD = 0.005


def next_seed(
    diffs: Sequence[float], min_seeds: int, max_seeds: int, smallest_effect: float = SMALLEST_EFFECT
) -> tuple[bool, Stop | None, str]:
    """After ``len(diffs)`` pairs: (train another pair?, why it stops, a sentence).

    Stops once the verdict is settled either way — before ``max_seeds`` only if it also holds
    with the spread floored (see ``MIN_SPREAD``); continues while it is not and seeds remain —
    unless, with the mean and spread seen so far, even ``max_seeds`` pairs would leave it
    unsettled (judged from ``FUTILITY_SEEDS`` pairs on, when the spread means something)."""
    n = len(diffs)
    if n < min_seeds:
        return True, None, f"{n} of at least {min_seeds} seeds"
    now = compare([0.0] * n, list(diffs), smallest_effect)
    if now.verdict != "inconclusive" and (n >= max_seeds or _holds(diffs, smallest_effect)):
        return False, "settled", f"{now.verdict} after {n} seeds: {now.reason}"
    if n >= max_seeds:
        return False, "max_seeds", f"still inconclusive after the maximum of {max_seeds} seeds"
    if n >= FUTILITY_SEEDS and not _could_settle(diffs, max_seeds, smallest_effect):
        return (
            False,
            "futile",
            (f"inconclusive after {n} seeds, and at this spread {max_seeds} would not settle it"),
        )
    return True, None, f"inconclusive after {n} seeds; adding a seed"


def _holds(diffs: Sequence[float], smallest_effect: float) -> bool:
    """Whether the verdict stands with the spread floored (two pairs: at the smallest effect)."""
    n = len(diffs)
    floor = max(smallest_effect if n == 2 else smallest_effect / 2, MIN_SPREAD)
    return _settles(fmean(diffs), max(stdev(diffs), floor), n, smallest_effect)


def _settles(mean: float, spread: float, n: int, smallest_effect: float) -> bool:
    low, high = span(mean, spread, n)
    return low > 0 or high < 0 or (n >= EQUIVALENCE_SEEDS and high < smallest_effect)


def _could_settle(diffs: Sequence[float], seeds: int, smallest_effect: float) -> bool:
    """Whether ``seeds`` pairs with this mean and spread would give a verdict."""
    return _settles(fmean(diffs), stdev(diffs), seeds, smallest_effect)


def trailing(
    scores: Mapping[str, Sequence[float]], smallest_effect: float = SMALLEST_EFFECT
) -> dict[str, str]:
    """Candidates to stop at a racing checkpoint, with why: those whose mean metric (over the
    seeds, best epoch so far) trails the leader's by more than a clear margin — twice the
    smallest effect and twice the spread of the paired differences to the leader."""
    if len(scores) < 2:
        return {}
    means = {name: fmean(values) for name, values in scores.items()}
    leader = max(means, key=means.__getitem__)
    out: dict[str, str] = {}
    for name, values in scores.items():
        if name == leader:
            continue
        diffs = [v - lead for v, lead in zip(values, scores[leader], strict=True)]
        spread = stdev(diffs) if len(diffs) > 1 else 0.0
        margin = max(2 * smallest_effect, 2 * spread)
        gap = means[leader] - means[name]
        if gap > margin:
            out[name] = f"trailed {leader} by {gap:.4f} (margin {margin:.4f})"
    return out
