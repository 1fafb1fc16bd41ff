"""Arithmetic on one per-epoch series: windows, jitter, trends.

Pure Python on purpose (no numpy): a report holds tens to hundreds of epochs, and at that size
plain lists beat array set-up costs, so a diagnosis costs microseconds on the request path.
"""

import math
from collections.abc import Sequence
from itertools import accumulate, compress, islice, pairwise, repeat
from operator import add, le, mul, neg, sub
from statistics import NormalDist
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


def windows(y: Sequence[float], width: int, sums: list[float] | None = None) -> Windows:
    """Where the lowest ``width``-epoch window starts, its mean and the last window's, in O(n)
    with C-level maps: this runs several times on every report. ``sums``: the window sums
    (:func:`windows_sums`), when known."""
    if width <= 1 or len(y) < width:
        low = min(y)
        return Windows(list(y).index(low), low, y[-1])
    totals = windows_sums(y, width) if sums is None else sums
    low = min(totals)
    return Windows(totals.index(low), low / width, totals[-1] / width)


def negated(y: Sequence[float]) -> list[float]:
    return list(map(neg, y))


_MAD_TO_SIGMA = 1.4826


def _mad(values: list[float]) -> float:
    """Standard deviation from the median absolute value (about zero): robust to spikes."""
    values = sorted(map(abs, values))
    half = len(values) // 2
    middle = values[half] if len(values) % 2 else (values[half - 1] + values[half]) / 2
    return _MAD_TO_SIGMA * middle


_MIN_DIFFERENCES = 6


def later_count(n: int) -> int:
    """How many epochs the jitter of a curve of ``n`` epochs is measured on."""
    return n - _later(n)


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal one; exact enough for
    thresholds, and the normal one when ``df`` < 1)."""
    z = NormalDist().inv_cdf(p)
    if df < 1:
        return z
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


# The noise is measured on at most this many of the latest evaluations. A MAD over 512 second
# differences is within about 5-8% of the noise (they are correlated a few lags deep), and a long
# run's recent wobble is the one its verdict has to beat; past this span, a look at a run that
# grows by one evaluation costs the same however long the run (the MAD sorts what it reads).
NOISE_SPAN = 512


def _later(n: int) -> int:
    """Where the later part of a curve starts: its last two thirds (at most :data:`NOISE_SPAN`
    evaluations), or all but the first epoch when that is too short to measure anything on."""
    start = max(1, n // 3, n - NOISE_SPAN)
    return 1 if n - start < 4 else start


def noise(y: Sequence[float], k: int = 1, sums: list[float] | None = None) -> float:
    """Robust standard deviation of the noise of the later part of a curve (:func:`_later`), as
    the mean of ``k`` consecutive epochs sees it (``k`` = 1: each epoch's own jitter).

    Each epoch's jitter comes from second differences, a - 2b + c, which cancel a locally linear
    trend (variance 6 times the noise's). Means of ``k`` epochs are compared at lag ``k`` by third
    differences, m(t-k) - 3m(t) + 3m(t+k) - m(t+2k), which also cancel the bend of a U-shaped
    curve (variance 20 times a mean's when the means are independent). MAD/0.6745 makes both
    robust to a few spikes. Measured at the scale of the comparison, autocorrelated noise shows
    its real reach: AR(1) noise with rho = 0.5 moves a 5-epoch mean 1.5 times as far as white
    noise of the same jitter. ``sums``: the k-sums of ``y`` (:func:`windows_sums`), when known."""
    if k <= 1:
        start = _later(len(y))
        # a - 2b + c over consecutive triples, with C-level maps: this runs on every report.
        mid = y[start:-1]
        d2 = list(map(sub, map(add, y[start - 1 :], y[start + 1 :]), map(add, mid, mid)))
        return _mad(d2) / math.sqrt(6) if d2 else 0.0
    # Only the later part, and only with enough of it: the early fall of a curve is all trend.
    start, end = max(k, len(y) // 3, len(y) - NOISE_SPAN), len(y) - k + 1
    if end - 2 * k - start < _MIN_DIFFERENCES:
        return 0.0
    # The k-sums from index start - k on (s[i] = sums[start - k + i]): all the differences read.
    s = windows_sums(y[start - k :], k) if sums is None else sums[start - k :]
    last = end - start + k
    # (m[t-k] - m[t+2k]) + 3 (m[t+k] - m[t]) for every t, with C-level maps, on sums (k m).
    outer = map(sub, s[: last - 3 * k], s[3 * k : last])
    inner = map(sub, s[2 * k : last - k], s[k : last - 2 * k])
    d = list(map(add, outer, map(mul, inner, repeat(3.0))))
    return _mad(d) / math.sqrt(20) / k


def windows_sums(y: Sequence[float], width: int) -> list[float]:
    """Sums of every run of ``width`` consecutive values."""
    sums = list(accumulate(y, initial=0.0))
    return list(map(sub, islice(sums, width, None), sums))


# Steps of one example among at most this many: on a larger validation set one example is
# below every floor the verdict uses anyway.
_MOST_EXAMPLES = 500
# How far from a whole count of examples a logged value may sit (logs round what they print).
_COUNT_SLACK = 0.05


def count_step(y: Sequence[float]) -> float:
    """1/N when every value of ``y`` is a count of N examples (an accuracy on a validation set of
    N, as logged), shown by values that repeat and at least four levels on that grid; 0 for a
    series that moves freely. N is read off the smallest gap between levels, one to four
    examples wide."""
    distinct = set(y)
    if len(distinct) < 4 or 2 * len(distinct) > len(y):
        return 0.0
    levels = sorted(distinct)
    gap: float = min(map(sub, levels[1:], levels[:-1]))
    for examples in range(1, 5):
        n = round(examples / gap)
        if 1 < n <= _MOST_EXAMPLES and all(
            abs(v * n - round(v * n)) <= _COUNT_SLACK for v in levels
        ):
            return 1 / n
    return 0.0


def trend_rise(y: Sequence[float], z: float, floor: float) -> bool:
    """A least-squares trend over ``y`` that rises by more than ``floor`` in all and whose slope
    is more than ``z`` standard errors above zero: a slow, steady slide that no single window
    shows beyond the noise."""
    n = len(y)
    if n < 6:
        return False
    # Centred values, so that sum((i - mean i) d) is sum(i d), and the residual sum of squares
    # is sum(d^2) - slope^2 sxx: C-level maps, as this runs on most reports.
    my = sum(y) / n
    d = list(map(sub, y, repeat(my)))
    sxx = n * (n * n - 1) / 12
    slope = sum(map(mul, range(n), d)) / sxx
    if slope * (n - 1) <= floor:
        return False
    residual = max(0.0, sum(map(mul, d, d)) - slope * slope * sxx)
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
