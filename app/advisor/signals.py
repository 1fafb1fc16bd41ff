"""One validation signal (the named metric, or the validation loss) read against its own noise:
where it was best, whether it got clearly worse since, by which rule, and from when.

A series is handed over as ``y``, "lower is better", so one code path serves losses, error rates
and accuracies alike; ``raw`` is the same series as reported, for the figures people read.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from app.advisor import series
from app.advisor.curves import Epoch


class Rule(StrEnum):
    """Why a signal counts as degraded."""

    # The last stretch of epochs sits above the best stretch by more than noise and floor.
    WINDOW = "window"
    # A slide after the best stretch whose least-squares slope is clear of its own scatter.
    TREND = "trend"
    # Worse on most epochs since the best one and at its worst at the end, for at least two
    # epochs, beyond a small floor: the shape short runs show, where too few epochs exist to
    # measure noise on. Weak on its own: it counts only while the training loss keeps falling.
    STEADY = "steady"
    # Held above the best stretch by more than its jitter on nearly every epoch since, for at
    # least ``held_epochs``: a jump that stays, in a curve too jittery for the window rule.
    # Weak on its own, like the steady rule.
    HELD = "held"
    # Degraded at the run's previous look and not recovered since: no new best, and still above
    # half the threshold. Entering at the threshold and leaving at half of it keeps a verdict
    # from flickering while the signal hovers near the threshold.
    STILL = "still"
    # The last stretch sits above the best stretch by at least ``Floors.severe`` of the best
    # value, and beyond ``Floors.z_severe`` times the jitter: a rise that large is no wobble,
    # however much the curve swings once it has begun to overfit (the swings of a model that
    # memorises are part of the later stretch its jitter is measured on, which raises the window
    # rule's threshold with the very rise it has to find).
    SEVERE = "severe"


@dataclass(frozen=True, slots=True)
class Floors:
    """A change is "clear" only beyond ``z`` times the signal's jitter and a relative floor that
    grows with the epochs since the best one: a short run has had little time to drift, and a
    long one may wander that far by chance. For comparisons of stretches the jitter is widened by
    what autocorrelation adds, measured on the run itself (:func:`series.noise` at lag k): AR(1)
    noise with rho = 0.5 moves a 5-epoch mean 1.5 times as far as white noise does."""

    full: float
    # Share of ``full`` required right after the best epoch; reached in full after ``ramp`` epochs.
    short_share: float = 0.5
    ramp: int = 5
    z: float = 3.0
    # At most this much widening of the jitter for stretches: beyond it, what the lag-k
    # differences see is the curve's own shape more than its noise.
    widening_max: float = 2.5
    # The trend rule starts at the best stretch, a low point picked from the noise, which biases
    # its slope upwards: it asks for more standard errors than a window does.
    z_trend: float = 4.0
    # The steady rule's own floor (relative; None turns the rule off) and noise multiple, for
    # runs shorter than ``measurable`` epochs, which show their trend but not their jitter;
    # longer runs need the usual floor and the rise beyond ``z_steady`` times the jitter.
    steady: float | None = 0.005
    z_steady: float = 2.0
    measurable: int = 8
    # The held rule: share of epochs after the best stretch above it (None turns it off).
    held_share: float | None = 0.8
    held_epochs: int = 4
    # The severe rule: the rise, as a share of the best value (None turns it off), and the jitter
    # multiple it must also clear.
    severe: float | None = None
    z_severe: float = 2.0

    def floor(self, epochs_since_best: int) -> float:
        share = min(1.0, max(self.short_share, epochs_since_best / self.ramp))
        return self.full * share


@dataclass(frozen=True, slots=True)
class Sequential:
    """The live rule's noise test (:func:`clear_of_noise`): the false-alarm rate ``alpha`` it
    allows over a whole run, and the autocorrelation it assumes of noise it cannot measure."""

    alpha: float = 0.02
    rho: float = 0.5


class Reading(NamedTuple):
    name: str
    higher_is_better: bool
    best: int  # index of the best epoch
    best_value: float
    # Mean of the best stretch of epochs (as many as the tail), in the series' own units.
    best_stretch: float
    last_value: float
    # Last stretch against the best stretch, as a fraction of the best value; positive is worse.
    degradation: float
    noise: float
    threshold: float
    rule: Rule | None  # set when degraded
    onset: int | None  # index of the first epoch of the degradation
    # The run was too short to measure how far its stretches wander, and no prior was assumed:
    # the stretches were read as white noise.
    assumed_white: bool = False

    @property
    def degraded(self) -> bool:
        return self.rule is not None

    def to_dict(self, epochs: Sequence[Epoch]) -> dict[str, Any]:
        """JSON-ready, with epoch numbers instead of indices."""
        return {
            "name": self.name,
            "higher_is_better": self.higher_is_better,
            "best_epoch": epochs[self.best],
            "best_value": self.best_value,
            "last_value": self.last_value,
            "degradation": self.degradation,
            "noise": self.noise,
            "threshold": self.threshold,
            "degraded": self.degraded,
            "rule": self.rule.value if self.rule else None,
            "onset_epoch": epochs[self.onset] if self.onset is not None else None,
        }


def ar_reach(k: int, rho: float) -> float:
    """How many times the jitter measured by second differences (:func:`series.noise`) a mean of
    ``k`` epochs of AR(1) noise with ``rho`` wanders, times sqrt(k): the jitter understates such
    noise by sqrt((1 - rho)(3 - rho)/3), and a mean of k of its epochs averages out less than
    white noise does, by sqrt(1 + 2 sum_j (k - j) rho^j / k)."""
    understated = math.sqrt((1 - rho) * (3 - rho) / 3)
    return math.sqrt(1 + 2 * sum((k - j) * rho**j for j in range(1, k)) / k) / understated


def read(
    name: str,
    raw: list[float],
    higher_is_better: bool,
    floors: Floors,
    settled: int = 0,
    prior_rho: float | None = None,
) -> Reading:
    """Read one series (at least two epochs) for degradation after its best epoch; its noise is
    measured from index ``settled`` on (where a learning-rate schedule came down from its peak:
    the swings of the high-rate phase are the optimiser's, not the signal's wobble).
    ``prior_rho``: on a run too short to measure how far its stretches wander, assume noise with
    this autocorrelation instead of none (:func:`ar_reach`)."""
    y = series.negated(raw) if higher_is_better else raw
    n = len(y)
    k = series.tail_length(n)
    best = series.argmin(y)
    # The best level is the best k-epoch window, so it is compared like with like against the
    # k-epoch tail: a single lucky epoch does not make the rest of the run look degraded.
    sums = series.windows_sums(y, k)
    stretch = series.windows(y, k, sums)
    quiet = y[settled:] if settled else y
    jitter = series.noise(quiet)
    scale = abs(raw[best]) if abs(raw[best]) > 1e-12 else (max(y) - min(y)) or 1.0
    floor = floors.floor(n - 1 - best) * scale
    # The jitter as a stretch of k epochs sees it, put back in one epoch's units: white noise
    # averages out over k epochs, autocorrelated noise much less, and this measures which.
    widening = 1.0
    assumed_white = False
    if jitter > 0:
        wander = series.noise(quiet, k, None if settled else sums) * math.sqrt(k)
        if wander == 0 and prior_rho is not None:
            wander = jitter * ar_reach(k, prior_rho)
        assumed_white = wander == 0
        widening = min(floors.widening_max, max(1.0, wander / jitter))
    spread = jitter * widening
    rise = stretch.last_mean - stretch.lowest_mean
    rule = _rule(y, best, stretch, k, floor, spread, scale, floors)
    if rule is not None:
        # A metric counted on a small validation set moves in steps of one example: a rise
        # within one such step is an example answered differently, not a model that got worse
        # (a metric's relative floor, 1.5% of its best, is below one example of a set of fewer
        # than ~70).
        step = _STEP_SLACK * series.count_step(y)
        if step > floor:
            floor = step
            rule = _rule(y, best, stretch, k, floor, spread, scale, floors)
    threshold = max(floor, floors.z * spread)
    onset = None
    if rule is not None:
        onset = series.settled_after(y, best, y[best] + jitter) or best + 1
    return Reading(
        name=name,
        higher_is_better=higher_is_better,
        best=best,
        best_value=raw[best],
        best_stretch=-stretch.lowest_mean if higher_is_better else stretch.lowest_mean,
        last_value=raw[-1],
        degradation=series.rel(rise, scale),
        noise=jitter,
        threshold=threshold,
        rule=rule,
        onset=onset,
        assumed_white=assumed_white,
    )


# A rise must beat one example's step by this much: logs round the values they print.
_STEP_SLACK = 1.1


def _rule(
    y: list[float],
    best: int,
    stretch: series.Windows,
    k: int,
    floor: float,
    spread: float,
    scale: float,
    floors: Floors,
) -> Rule | None:
    """The first rule by which ``y`` (lower is better) got worse since its best, if any; ``floor``
    and ``spread``: the least rise that counts and the jitter as a stretch of k epochs sees it,
    in the series' units."""
    n = len(y)
    best_ends = stretch.lowest_start + k - 1
    rise = stretch.last_mean - stretch.lowest_mean
    # Both the best epoch and the best stretch must lie before the tail that is judged.
    room = best < n - k and best_ends < n - k
    if room and rise > max(floor, floors.z * spread):
        return Rule.WINDOW
    if room and series.trend_rise(y[best_ends:], floors.z_trend, floor):
        return Rule.TREND
    if (
        room
        and floors.severe is not None
        and rise >= floors.severe * scale
        and rise > floors.z_severe * spread
    ):
        return Rule.SEVERE
    if (
        floors.steady is not None
        and series.mostly_rising(y, best)
        and y[-1] - stretch.lowest_mean
        > (
            max(floor, floors.z_steady * spread)
            if n >= floors.measurable
            else floors.steady * scale
        )
    ):
        return Rule.STEADY
    if room and floors.held_share is not None and rise > floor:
        after = y[best_ends + 1 :]
        above = sum(v > stretch.lowest_mean + spread for v in after)
        if len(after) >= floors.held_epochs and above >= floors.held_share * len(after):
            return Rule.HELD
    return None


def held_over(reading: Reading, best_before: int, threshold_before: float = math.inf) -> Reading:
    """``reading`` kept degraded (:attr:`Rule.STILL`) when it was degraded at the previous look
    with its best at index ``best_before``, has found no new best since, and still sits above
    half its threshold: the lower of this look's and ``threshold_before``, the one the verdict
    was said at (a rise swells the jitter measured on the later part of the run, and with it
    the threshold, so that each look's own would let the verdict go while the rise goes on)."""
    if reading.degraded or reading.best != best_before:
        return reading
    rise = reading.degradation * max(abs(reading.best_value), 1e-12)
    threshold = min(reading.threshold, threshold_before)
    if rise <= threshold / 2:
        return reading
    return reading._replace(
        rule=Rule.STILL, onset=reading.onset or reading.best + 1, threshold=threshold
    )


def clear_of_noise(y: list[float], test: Sequential) -> bool:
    """The last stretch of ``y`` (lower is better) sits above its best stretch by more than noise
    could put it at any look of a run judged after every evaluation.

    The threshold is derived from the noise it has to beat. Each look compares the last stretch
    of k epochs with every earlier one; over a run of n evaluations that is about (n - 3) looks
    times (n - k) / k independent stretches, and Bonferroni gives each comparison
    ``alpha / (looks * stretches)``, hence z standard deviations of the difference of two
    stretch means, sqrt(2) times one mean's. That standard deviation is the larger of what the
    curve shows at the scale of the stretches (:func:`series.noise` at lag k, which captures
    autocorrelation but needs a long run) and what AR(1) noise with ``test.rho`` and the
    measured jitter would give: each epoch's jitter, measured by second differences, understates
    autocorrelated noise by sqrt((1 - rho)(3 - rho)/3), and a mean of k such epochs wanders
    ``widening(k)`` times farther than white noise. The jitter itself is estimated from the m
    second differences of the later part of the run, so z is Student's t quantile with m degrees
    of freedom rather than the normal one (Cornish-Fisher expansion): a run of 20 evaluations
    cannot claim the certainty of one of 200."""
    n = len(y)
    k = series.tail_length(n)
    stretch = series.windows(y, k)
    # A stop must not rest on one bad evaluation: the last stretch is taken without its worst.
    last = sorted(y[-k:])[:-1] if k >= 3 else y[-k:]
    spread = max(series.noise(y, k), series.noise(y) * ar_reach(k, test.rho) / math.sqrt(k))
    comparisons = max(1.0, n - 3.0) * max(1.0, (n - k) / k)
    z = series.t_quantile(1 - test.alpha / comparisons, series.later_count(n) - 1)
    return series.mean(last) - stretch.lowest_mean > z * math.sqrt(2) * spread


def recent_gain(raw: list[float], higher_is_better: bool) -> float | None:
    """How far the last stretch beats the stretch just before it (positive: better); None for a
    run too short to hold both."""
    n = len(raw)
    k = series.tail_length(n)
    before = raw[-2 * k : -k] if n >= 2 * k + 1 else raw[:-k]
    if not before:
        return None
    gain = series.mean(raw[-k:]) - series.mean(before)
    return gain if higher_is_better else -gain


def still_improving(reading: Reading, raw: list[float]) -> bool:
    """The last stretch beats the stretch just before it by more than the reading's threshold."""
    gain = recent_gain(raw, reading.higher_is_better)
    return gain is not None and gain > reading.threshold


def improving_since(reading: Reading, raw: list[float], index: int) -> bool:
    """Clearly better at the end than at epoch index ``index``, with its best epoch in the last
    stretch, and still getting better there (its last stretch beats the one before, or it rose
    on most epochs since ``index`` and is at its highest on the last): not merely better than it
    once was."""
    y = raw if reading.higher_is_better else series.negated(raw)
    k = series.tail_length(len(y))
    gain = series.mean(y[-k:]) - y[index]
    if gain <= reading.threshold or reading.best < len(y) - k:
        return False
    return still_improving(reading, raw) or series.mostly_rising(y, index)
