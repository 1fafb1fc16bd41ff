"""Arithmetic on one per-epoch series: windows, jitter, trends.

Pure Python on purpose (no numpy): a report holds tens to hundreds of epochs, and at that size
plain lists beat array set-up costs, so a diagnosis costs microseconds on the request path.
"""

import math
from collections.abc import Sequence
from itertools import accumulate, compress, islice, pairwise, repeat
from operator import add, le, neg, sub
from typing import NamedTuple


def mean(y: Sequence[float]) -> float:
    return sum(y) / len(y)


def argmin(y: list[float]) -> int:
    """First index of the smallest value."""
    return y.index(min(y))


def rel(delta: float, reference: float) -> float:
    """``delta`` as a fraction of ``reference``; a zero reference is floored so the figure stays
    finite (and JSON-safe)."""
    return delta / max(abs(reference), 1e-12)


def tail_length(n: int) -> int:
    """How many last epochs stand for "the end of training": a quarter of the run, 1 to 5."""
    return max(1, min(5, n // 4))


class Windows(NamedTuple):
    """The lowest and the last run of ``width`` consecutive values."""

    lowest_start: int
    lowest_mean: float
    last_mean: float


def windows(y: Sequence[float], width: int) -> Windows:
    """Where the lowest ``width``-epoch window starts, its mean and the last window's, in O(n)
    with C-level maps: this runs several times on every report."""
    if width <= 1 or len(y) < width:
        low = min(y)
        return Windows(list(y).index(low), low, y[-1])
    sums = list(accumulate(y, initial=0.0))
    totals = list(map(sub, islice(sums, width, None), sums))
    low = min(totals)
    return Windows(totals.index(low), low / width, totals[-1] / width)


def negated(y: Sequence[float]) -> list[float]:
    return list(map(neg, y))


_MAD_TO_SIGMA = 1.4826 / math.sqrt(6)


def noise(y: Sequence[float]) -> float:
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
    d2.sort()
    half = len(d2) // 2
    middle = d2[half] if len(d2) % 2 else (d2[half - 1] + d2[half]) / 2
    return _MAD_TO_SIGMA * middle


def trend_rise(y: Sequence[float], z: float, floor: float) -> bool:
    """A least-squares trend over ``y`` that rises by more than ``floor`` in all and whose slope
    is more than ``z`` standard errors above zero: a slow, steady slide that no single window
    shows beyond the noise."""
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


def mostly_rising(y: Sequence[float], start: int) -> bool:
    """At least two epochs after ``start``, two in three of them above the epoch before, and the
    last one the highest since ``start``."""
    after = y[start:]
    steps = len(after) - 1
    if steps < 2 or after[-1] < max(after):
        return False
    ups = sum(b > a for a, b in pairwise(after))
    return 3 * ups >= 2 * steps


def settled_after(y: Sequence[float], start: int, level: float) -> int | None:
    """The first index after ``start`` from which ``y`` stays above ``level``."""
    n = len(y)
    at_or_below = compress(range(start + 1, n), map(le, y[start + 1 :], repeat(level)))
    first = max(at_or_below, default=start) + 1
    return first if first < n else None
