"""Diagnosis of a training run's curves: overfitting, healthy, underfitting, diverging, no signal,
or too few epochs to judge — with the evidence behind the verdict and the epoch to keep.

Two validation signals are read, each against its own noise (:mod:`app.advisor.signals`): the
named metric, when there is one, and the validation loss. The decision reads like a
practitioner's:

1. the training loss itself rising is ``diverging``;
2. a metric that never clearly beats chance while the training loss falls is ``no_signal``;
3. a metric clearly worse after its best stretch is ``overfitting`` (signal ``metric``, or
   ``both`` when the validation loss agrees);
4. a validation loss clearly rising after its minimum while the training loss does not get worse
   (keeps falling, for the weaker "steady" rule) is ``overfitting`` by ``valid_loss`` — unless the
   metric is still clearly improving: then the model is only growing over-confident, ``healthy``;
5. a model that does not fit its own training data is ``underfitting``; anything else ``healthy``.
"""

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from itertools import compress, repeat
from operator import ge, gt, le, mul
from typing import Any, NamedTuple

from app.advisor import series, signals
from app.advisor.curves import (
    VALID_LOSS,
    Criterion,
    Curves,
    Epoch,
    ceiling,
    chance_level,
    infer_criterion,
)
from app.advisor.signals import Floors, Reading


class Verdict(StrEnum):
    OVERFITTING = "overfitting"
    HEALTHY = "healthy"
    UNDERFITTING = "underfitting"
    DIVERGING = "diverging"
    # The validation loss jumped while the learning rate warmed up or peaked, or while the
    # training loss barely moved: the optimisation is unsettled, not memorising.
    UNSTABLE = "unstable"
    NO_SIGNAL = "no_signal"
    INSUFFICIENT_DATA = "insufficient_data"


class Severity(StrEnum):
    NONE = "none"
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


class Signal(StrEnum):
    """Which validation signal carried an overfitting verdict."""

    METRIC = "metric"
    VALID_LOSS = "valid_loss"
    BOTH = "both"


# A validation loss half as high again as its best has risen severely.
_SEVERE_LOSS = 0.5


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Tuning knobs. Losses move proportionally more than bounded metrics, hence separate floors."""

    min_epochs: int = 4
    # Evaluations in a row a stop verdict must be worth stopping on before the live rule stops.
    live_looks: int = 2
    live: signals.Sequential = field(default_factory=signals.Sequential)
    # The severe rule counts a rise of the validation loss that ``severity_loss`` calls severe.
    loss: Floors = field(default_factory=lambda: Floors(full=0.03, severe=_SEVERE_LOSS))
    # The steady rule reads the loss only: a bounded metric slipping for two epochs is too common
    # on healthy runs to mean anything before its noise can be measured.
    metric: Floors = field(default_factory=lambda: Floors(full=0.015, steady=None, held_share=None))
    # Relative degradation at which overfitting becomes moderate / severe.
    severity_loss: tuple[float, float] = (0.15, _SEVERE_LOSS)
    severity_metric: tuple[float, float] = (0.04, 0.12)
    # The training loss "keeps falling" after the validation loss's best epoch: it fell since by
    # at least this fraction, and by more than its own jitter.
    train_fall: float = 0.03
    # Training loss that fell by less than this fraction of its first value did not learn.
    not_learning_drop: float = 0.05
    # A training loss still falls while its last stretch is below the stretch before by more
    # than this share per epoch.
    # Underfitting: a training loss within ``underfit_gap`` (relative) of the validation loss
    # and high for the task: a bounded metric that covered less than ``underfit_reach`` of the
    # way from chance to its ceiling; else, for n classes, a training loss above
    # ``underfit_chance`` times ln(n), the cross-entropy of guessing (a training loss below it is
    # also what memorising needs before no_signal is said). With nothing to say what
    # the task allows (an autoencoder, a regression), only a loss that ended above
    # ``underfit_share`` of its first value, one that barely moved: a fall to 60% of its
    # start is how far a converged autoencoder comes.
    still_falling: float = 0.01
    underfit_gap: float = 0.1
    underfit_reach: float = 0.5
    underfit_chance: float = 0.5
    underfit_share: float = 0.8
    # A schedule is at its peak while the learning rate is at least this share of its highest so
    # far, after rising to it (a warm-up, a one-cycle).
    lr_peak_share: float = 0.7
    # A validation loss rise more than this many times the training loss's relative fall since
    # the validation loss's best is a jump, not memorisation, unless the training loss already
    # sits below ``memorised_gap`` times the validation loss (a memorised model fits nothing new).
    unstable_ratio: float = 5.0
    memorised_gap: float = 0.5
    # A memorised model's training loss keeps falling, for the weak rules, once it fell by this
    # share (to a tenth) since the validation signal's best, whether or not its last evaluation
    # is a new low: near zero (0.0006, 0.0013, 0.0008) its jitter is most of its value.
    memorised_fall: float = 0.9
    # A validation loss this many times the evaluation before it blew up: memorisation raises
    # it gradually.
    blow_up: float = 3.0
    # A signal whose last stretch beats the one before by this many times its jitter is on its
    # way back, and no stop is taken on it.
    recovering: float = 2.0
    # Training loss whose tail rose by this fraction of its own range is diverging.
    diverging_share: float = 0.25
    train_rise_rel: float = 0.10
    # No signal: the training loss fell by at least this share of its first value (it memorises)
    # while the metric never cleared chance by ``z`` times its jitter and this share of chance.
    memorised_drop: float = 0.25
    chance_margin: float = 0.1
    # With no chance level known, the metric's first epoch stands in, but only on runs this long
    # whose validation loss never clearly beat its first epoch either: a fine-tune that is good
    # from its first epoch must not pass for one that learns nothing.
    first_epoch_min_epochs: int = 8


DEFAULT_THRESHOLDS = Thresholds()


class Training(NamedTuple):
    """The training loss: where it was lowest and whether it got worse since."""

    min_at: int
    tail: float
    worsening: bool
    rise: float  # tail above the minimum
    span: float  # largest value above the minimum
    # Fell by a clear share of its first value at some point: the model fit something.
    learned: bool
    # Ends below ``memorised_gap`` times the validation loss's best: it fits its training set
    # far better than anything held out.
    memorised: bool


class Chance(NamedTuple):
    level: float
    source: str  # "n_classes" or "first_epoch"
    beaten: bool


class Evidence(NamedTuple):
    criterion: str
    higher_is_better: bool
    n_epochs: int
    best_epoch: Epoch | None = None
    last_epoch: Epoch | None = None
    best_value: float | None = None
    last_value: float | None = None
    signal: Signal | None = None
    stop_epoch: Epoch | None = None
    onset_epoch: Epoch | None = None
    # Each series' last value against its own best, as a fraction of the best; positive is worse.
    metric_degradation: float | None = None
    valid_loss_degradation: float | None = None
    # Relative change of the training loss from the stop epoch to the end; negative is improving.
    train_loss_change: float | None = None
    train_loss_trend: str | None = None
    generalization_gap: float | None = None
    gap_ratio: float | None = None
    # Jitter and "clearly worse" threshold of the deciding signal (the criterion's when none).
    noise: float | None = None
    threshold: float | None = None
    tail_epochs: int | None = None
    still_improving: bool = False
    # The validation loss rose while the metric kept improving: confident mistakes, not overfitting.
    overconfident: bool = False
    chance: float | None = None
    chance_source: str | None = None
    severity: Severity = Severity.NONE
    # Each signal's own reading: degradation, noise, threshold, rule, best and onset epochs.
    signals: dict[str, dict[str, Any]] = {}
    # Why the run is unstable: "schedule" (the learning rate warming up or at its peak) or
    # "jump" (the validation loss jumped while the training loss barely moved).
    instability: str | None = None
    # The learning rate at the last evaluation and the highest so far, when reported.
    lr: float | None = None
    lr_peak: float | None = None
    # How evaluations are named: "epoch", or "step" for a run reported by step.
    unit: str = "epoch"
    # The kept evaluation's step, and the criterion's value there, for a step-based run.
    stop_step: int | None = None
    stop_value: float | None = None
    # Evaluations reported without a training loss (filled from their neighbours to judge).
    train_loss_missing: int = 0
    # The metric still improves clearly or the training loss still falls: too early to judge
    # what the model can reach. Training and validation losses close, the training loss flat:
    # nothing left to cure.
    still_learning: bool = False
    converged: bool = False
    train_loss_falling: bool = False
    # The verdict was worth stopping on at this look (the live rule's test, :func:`diagnose`).
    stop_worthy: bool = False
    # Signals newly degraded at this look, which the verdict counts from the next one on.
    pending: list[str] = []
    # Epochs the kept one is chosen among: the metric within its noise of its best (for a
    # callback to keep copies of, since a later evaluation may move the choice among them).
    candidates: list[Epoch] = []


@dataclass(frozen=True, slots=True)
class Diagnosis:
    verdict: Verdict
    best_epoch: Epoch | None
    summary: str
    evidence: Evidence
    # The live rule's answer for a run still training: stop now (and keep ``stop_epoch``).
    should_stop: bool = False

    @property
    def stop_epoch(self) -> Epoch | None:
        return self.evidence.stop_epoch

    @property
    def onset_epoch(self) -> Epoch | None:
        return self.evidence.onset_epoch

    @property
    def signal(self) -> Signal | None:
        return self.evidence.signal

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``dataclasses.asdict`` deep-copies and costs 10x more)."""
        evidence = self.evidence._asdict()
        evidence["severity"] = self.evidence.severity.value
        signal = self.evidence.signal.value if self.evidence.signal else None
        evidence["signal"] = signal
        return {
            "verdict": self.verdict.value,
            "best_epoch": self.best_epoch,
            "stop_epoch": self.evidence.stop_epoch,
            "onset_epoch": self.evidence.onset_epoch,
            "signal": signal,
            "summary": self.summary,
            "should_stop": self.should_stop,
            "evidence": evidence,
        }


def training(train: list[float], thresholds: Thresholds, valid_best: float) -> Training:
    """Whether the optimisation itself is getting worse: its last stretch above its best stretch
    beyond noise, or doubled (an oscillating blow-up is its own "noise"), or above where training
    started. Stretches, not single epochs, because some frameworks log a noisy last-batch loss.
    A memorised training loss (below half ``valid_best``, the validation loss's best) wobbling
    near its floor by less than a quarter of its range, or of its way up to ``valid_best``, is not
    the optimisation failing."""
    n = len(train)
    # Two evaluations at least: a framework that logs its last batch's loss (the Trainer, at an
    # evaluation) can spike one evaluation, which is no sign of the optimisation failing.
    k = _stretch(n)
    min_at = series.argmin(train)
    low = train[min_at]
    tail = series.mean(train[-k:])
    rise = tail - low
    worsening = min_at < n - k and rise > thresholds.train_rise_rel * low
    # Only a tail well above the single lowest epoch needs the stretches: most runs stop here.
    if worsening and not tail > max(train[0], 2 * low):
        stretch = series.windows(train, k)
        low_stretch = stretch.lowest_mean
        rise_stretch = tail - low_stretch
        best_ends = stretch.lowest_start + k
        worsening = best_ends - 1 < n - k and (
            # Doubled, by more than a k-mean of the jitter the run showed up to its best stretch
            # could rise: a loss logged from one batch per evaluation swings that far by itself,
            # while a blow-up comes out of a quiet run.
            (
                rise_stretch > low_stretch
                and rise_stretch
                > thresholds.loss.z * series.noise(train[:best_ends]) * math.sqrt(2 / k)
            )
            or (
                rise_stretch > thresholds.train_rise_rel * low_stretch
                and rise_stretch > thresholds.loss.z * series.noise(train)
            )
        )
    span = max(train) - low
    memorised = tail < thresholds.memorised_gap * valid_best
    # A run that starts memorised (training resumed, a second fit) has a range of jitter alone:
    # the way up to the validation loss is the scale a failing optimisation would cover.
    if worsening and memorised and rise < thresholds.diverging_share * max(span, valid_best - low):
        worsening = False
    learned = train[0] - low >= thresholds.not_learning_drop * train[0]
    return Training(min_at, tail, worsening, rise, span, learned, memorised)


def keeps_falling(train: list[float], since: int, fit: Training, thresholds: Thresholds) -> bool:
    """The training loss fell clearly from epoch index ``since`` to the end, to new lows; for a
    memorised model, by ``memorised_fall`` of its value at ``since``."""
    fall = train[since] - fit.tail
    if fit.memorised and fall >= thresholds.memorised_fall * train[since]:
        return True
    return fall > thresholds.train_fall * train[since] and series.mostly_rising(
        series.negated(train[since:]), 0
    )


_WEAK = (signals.Rule.STEADY, signals.Rule.HELD)
# Rules that let a rise count without this look showing it clear of three times the jitter (a
# held-over reading is one this look's rules did not find).
_UNPROVEN = (*_WEAK, signals.Rule.SEVERE, signals.Rule.STILL)
# Rules whose reading counts, unless an overfitting already rested on it, only while the
# training loss keeps falling (:func:`counts`).
_ENTERS_FALLING = (*_WEAK, signals.Rule.STILL)


def counts(
    reading: Reading,
    train: list[float],
    fit: Training,
    thresholds: Thresholds,
    was_underfit: bool = False,
    counted_before: bool = False,
) -> bool:
    """A degraded signal counts against the model while its training loss does not get worse;
    the weak rules (steady, held) only while it keeps falling since the signal's best, and so
    does every rule once the run was said to underfit (``was_underfit``): a model that cannot fit
    its training data memorises nothing unless its training loss still clearly falls. A signal
    the previous look's overfitting rested on (``counted_before``, from the same best) needs the
    fall to enter, not to stay: one noisy evaluation of a training loss logged per batch is not
    the model ceasing to memorise. A reading only held over (:attr:`Rule.STILL`) that no
    overfitting rested on enters as the weak rules do: this look's rules did not find it, and
    the look before did not count it."""
    if counted_before and reading.degraded:
        return not fit.worsening
    if reading.rule in _ENTERS_FALLING or (was_underfit and reading.degraded):
        return keeps_falling(train, reading.best, fit, thresholds)
    return reading.degraded and not fit.worsening


def chance(
    valid: list[float],
    crit: Criterion,
    raw: list[float],
    metric: Reading,
    loss: Reading,
    n_classes: int | None,
    thresholds: Thresholds,
) -> Chance:
    """Whether the metric ever clearly beat chance, from the class count when the report gives
    one, else from the metric's own first epoch."""
    sign = 1.0 if crit.higher_is_better else -1.0
    best_stretch = sign * metric.best_stretch
    level = chance_level(crit.name, n_classes)
    if level is not None:
        # The best stretch is a mean of k evaluations: it clears chance by more than noise when
        # it does so by the reading's threshold (z times the widened jitter of one evaluation)
        # over sqrt(k). Jitter measured on a handful of epochs is mostly trend: it would hide a
        # clear gain.
        k = series.tail_length(len(raw))
        noise = metric.threshold / math.sqrt(k) if len(raw) >= thresholds.metric.measurable else 0
        margin = max(noise, thresholds.chance_margin * abs(level))
        return Chance(level, "n_classes", best_stretch - sign * level > margin)
    # The first epoch stands in for chance only where it could be chance: for a metric whose
    # chance level a class count would give (accuracy without the count), below what guessing
    # between two classes scores, and on a validation loss that rose from the start (memorised
    # labels make confident mistakes). The first WER, F1 or mAP of a fine-tune says nothing of
    # chance: a pretrained model is good from its first evaluation.
    level = raw[0]
    margin = max(metric.threshold, thresholds.metric.z * metric.noise)
    highest_chance = chance_level(crit.name, 2)
    beaten = (
        len(raw) < thresholds.first_epoch_min_epochs
        or highest_chance is None
        or sign * (level - highest_chance) > 0
        or not loss.degraded
        or best_stretch - sign * level > margin
        or valid[0] - loss.best_stretch > loss.threshold
    )
    return Chance(level, "first_epoch", beaten)


def _severity(reading: Reading, thresholds: Thresholds, is_loss: bool) -> Severity:
    low, high = thresholds.severity_loss if is_loss else thresholds.severity_metric
    if reading.degradation < low:
        return Severity.MILD
    if reading.degradation < high:
        return Severity.MODERATE
    return Severity.SEVERE


STOP_VERDICTS = frozenset({Verdict.OVERFITTING, Verdict.NO_SIGNAL, Verdict.DIVERGING})


def diagnose(
    curves: Curves,
    criterion: Criterion | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    n_classes: int | None = None,
    previous: Mapping[str, Any] | None = None,
) -> Diagnosis:
    """Diagnose epochs given in order. ``criterion`` defaults to :func:`infer_criterion`;
    ``n_classes`` (from the report) sets the chance level of accuracy-like metrics.

    ``previous`` is the diagnosis answered at the run's previous look (as :meth:`Diagnosis.to_dict`
    gave it), for a run reported while it trains, and makes the verdict a sequential one that
    does not flicker with each evaluation: a signal counts as degraded from the second look in a
    row it is (at the first it is ``pending``), and stays degraded until it recovers
    (:func:`signals.held_over`).

    ``should_stop`` is the live rule, stricter than the verdict because a stop cannot be taken
    back and a run still training is looked at again after every evaluation: the stop verdict
    must pass :func:`_stop_worthy` at each of the last ``thresholds.live_looks`` evaluations, so
    a run's first look (no ``previous``) never says stop."""
    crit = criterion or infer_criterion(curves)
    if len(curves) < thresholds.min_epochs:
        return _insufficient(curves, crit, thresholds)
    held = _held_signals(previous)
    counted = _counted_signals(previous)
    was_underfit = previous is not None and previous.get("verdict") == Verdict.UNDERFITTING
    # The look judged as the run stands, with what the previous look knew.
    judge = partial(
        _judge,
        curves,
        _look(curves, crit, thresholds),
        crit,
        thresholds,
        n_classes,
        held,
        counted=counted,
        was_underfit=was_underfit,
    )
    judged = judge(
        adjacent=previous is not None
        and previous.get("evidence", {}).get("n_epochs") == len(curves) - 1,
        live=previous is not None,
    )
    if previous is None:
        # The run's first look: there is no look before it to confirm a stop (the next look
        # judges this one again, so nothing is lost by not testing it now).
        return judged
    if judged.evidence.pending:
        # The verdict waits for a second look; whether this look would be worth stopping on is
        # still this look's to say, so that the next one can confirm it.
        worth = _stop_worthy(curves, judge(), thresholds)
        return replace(judged, evidence=judged.evidence._replace(stop_worthy=worth))
    if not _stop_worthy(curves, judged, thresholds):
        return judged
    judged = replace(judged, evidence=judged.evidence._replace(stop_worthy=True))
    n = len(curves)

    def worthy(back: int) -> bool:
        # The previous answer already knows whether the look before this one was worth it;
        # after a batch of evaluations appended at once, the looks between are judged now.
        earlier = previous.get("evidence", {}) if back == 1 else {}
        if earlier.get("n_epochs") == n - 1 and "stop_worthy" in earlier:
            return bool(earlier["stop_worthy"])
        head = curves.head(n - back)
        if len(head) < thresholds.min_epochs:
            return False
        judged_then = _judge(head, _look(head, crit, thresholds), crit, thresholds, n_classes)
        return _stop_worthy(head, judged_then, thresholds)

    confirmed = all(worthy(back) for back in range(1, thresholds.live_looks))
    return replace(judged, should_stop=True) if confirmed else judged


def _stop_worthy(curves: Curves, judged: "Diagnosis", thresholds: Thresholds) -> bool:
    """A verdict worth stopping on: diverging, no signal, or overfitting that the other
    validation signal does not contradict by still reaching new bests, whose deciding signal is
    not on its way back, and that is either
    severe or, on a run long enough to measure its noise, a rise that noise could not have made
    at any of the looks so far (:func:`signals.clear_of_noise`)."""
    if judged.verdict not in STOP_VERDICTS:
        return False
    ev = judged.evidence
    if judged.verdict == Verdict.DIVERGING:
        # A training loss that has started to come back down may be a spike, not divergence;
        # one rising while the metric still reaches new bests has not cost the run its weights.
        train = curves.train_loss
        return train[-1] >= train[-2] and not _reaches_new_bests(curves, ev, "metric")
    raw = None if ev.criterion == VALID_LOSS.name else curves.metric(ev.criterion)
    if raw is not None and _best_at_start(raw, ev.higher_is_better):
        # A metric whose best is the value it began on, held exactly from the first evaluation
        # (a model answering one class, however it moved once it began to learn): the weights a
        # stop would keep are no better than the start's, so the run may as well go on until it
        # learns something.
        return False
    if judged.verdict != Verdict.OVERFITTING:
        return True
    # Severe by the signal that decided: a validation loss that spikes while the metric holds
    # is no reason to stop a run the metric says is fine.
    deciding = "valid_loss" if ev.signal == Signal.VALID_LOSS else "metric"
    severe = thresholds.severity_loss if deciding == "valid_loss" else thresholds.severity_metric
    valid = curves.valid_loss
    # Neither signal alone stops a run the other one says is still learning: a metric that dips
    # while the validation loss still reaches new lows has memorised nothing yet, and a
    # validation loss that rises while the metric still reaches new bests is over-confidence,
    # whose stop would keep weights the run is still beating.
    other = (
        "valid_loss"
        if ev.signal == Signal.METRIC
        else "metric"
        if ev.signal == Signal.VALID_LOSS
        else None
    )
    if other is not None and _reaches_new_bests(curves, ev, other):
        return False
    reading = ev.signals[deciding]
    # Nor does a signal on its way back: its last stretch beats the one before by more than
    # twice its jitter. A stop now keeps weights from before the dip that the run is climbing
    # back towards, and may pass (a YOLO segmenter whose mask mAP fell from 0.85 to 0.22 and was
    # climbing, 0.38, 0.52, 0.67, was stopped keeping epoch 5; it ended at 0.915).
    y = valid if deciding == "valid_loss" or raw is None else raw
    gain = signals.recent_gain(y, reading["higher_is_better"])
    if gain is not None and gain > thresholds.recovering * reading["noise"]:
        return False
    # A severe rise stops at once, without waiting for the noise test, only when a window or a
    # trend found it clear of three times the jitter.
    if reading["degradation"] >= severe[1] and reading["rule"] not in _UNPROVEN:
        return True
    if len(curves) < thresholds.metric.measurable:
        return False
    if ev.signal == Signal.VALID_LOSS:
        return signals.clear_of_noise(valid, thresholds.live)
    assert raw is not None
    return signals.clear_of_noise(
        series.negated(raw) if ev.higher_is_better else raw, thresholds.live
    )


def _best_at_start(raw: list[float], higher_is_better: bool) -> bool:
    """The metric's best is its first value, repeated exactly at the next two evaluations (or
    all of a shorter run's): the same answers three times over, where two equal readings of a
    small validation set, or of a fine-tune already at its ceiling, may be chance."""
    best = max(raw) if higher_is_better else min(raw)
    return raw[0] == best and all(v == best for v in raw[1:3])


def _reaches_new_bests(curves: Curves, ev: Evidence, name: str) -> bool:
    """The signal ``name`` found its best within the last stretch: the run is still beating the
    weights a stop would keep. The look already found each signal's best evaluation."""
    reading = ev.signals.get(name)
    if reading is None:
        return False
    best = _index_of(curves.epochs, reading["best_epoch"])
    n = len(curves)
    return best is not None and best >= n - series.tail_length(n)


def _index_of(epochs: list[Epoch], epoch: Epoch | None) -> int | None:
    """Where ``epoch`` is among the run's (increasing) epochs, found by bisection: a look at a
    long run should not walk all of it for two epochs."""
    if epoch is None:
        return None
    i = bisect_left(epochs, epoch)
    return i if i < len(epochs) and epochs[i] == epoch else None


class _Held(NamedTuple):
    """A signal degraded at the previous look: the epoch it was best at, the threshold its rise
    was judged against there, and whether it was only pending then (found at that look alone)."""

    best_epoch: int | float
    threshold: float
    pending: bool


def _held_signals(previous: Mapping[str, Any] | None) -> dict[str, _Held] | None:
    """The signals degraded at the previous look; None without one."""
    if previous is None:
        return None
    evidence = previous.get("evidence", {})
    readings = evidence.get("signals", {})
    pending = set(evidence.get("pending") or [])
    return {
        name: _Held(
            reading["best_epoch"], float(reading.get("threshold") or math.inf), name in pending
        )
        for name, reading in readings.items()
        if reading.get("degraded") and isinstance(reading.get("best_epoch"), int | float)
    }


def _held_over(
    reading: Reading,
    name: str,
    held: Mapping[str, _Held],
    counted: frozenset[str],
    epochs: list[Epoch],
) -> tuple[Reading, bool]:
    """Signal ``name``'s reading kept degraded when it was at the previous look
    (:func:`signals.held_over`), and whether the previous look's overfitting verdict rested on
    it from the same best. A signal only pending at the previous look is not held: the second
    look in a row that confirms it must find it again, or a one-look swing would be confirmed by
    its own echo (the hold-over lets go only at half the threshold)."""
    before = held.get(name)
    if before is None or before.pending:
        return reading, False
    at = _index_of(epochs, before.best_epoch)
    if at is None:
        return reading, False
    # Held at the threshold the verdict was said at; a signal degraded but not counted then, at
    # its own.
    threshold = before.threshold if name in counted else math.inf
    reading = signals.held_over(reading, at, threshold)
    return reading, name in counted and reading.best == at


# The signals an overfitting verdict rests on, by the signal it names (a Signal, or the plain
# string a stored answer holds: the same key).
_RESTS_ON: dict[str | None, frozenset[str]] = {
    Signal.METRIC: frozenset({"metric"}),
    Signal.VALID_LOSS: frozenset({"valid_loss"}),
    Signal.BOTH: frozenset({"metric", "valid_loss"}),
}


def _counted_signals(previous: Mapping[str, Any] | None) -> frozenset[str]:
    """The signals the previous look's overfitting verdict rested on; none for another verdict."""
    if previous is None or previous.get("verdict") != Verdict.OVERFITTING:
        return frozenset()
    return _RESTS_ON.get(previous.get("signal"), frozenset())


class _Look(NamedTuple):
    """What a look reads off the curves before judging them: the validation signals (the costly
    part, noise estimates included), read once however many ways the look is judged."""

    loss: Reading
    metric: Reading | None
    raw: list[float] | None  # the metric's values, when the run is judged by one


def _look(curves: Curves, crit: Criterion, thresholds: Thresholds) -> _Look:
    valid = curves.valid_loss
    settled = _settled(curves, thresholds)
    loss = signals.read("valid_loss", valid, False, thresholds.loss, settled)
    if crit.is_loss:
        return _Look(loss, None, None)
    raw = curves.metric(crit.name)
    metric = signals.read(crit.name, raw, crit.higher_is_better, thresholds.metric, settled)
    if metric.degraded and metric.assumed_white and not loss.degraded:
        # A metric that slipped while the validation loss did not rise has no second witness:
        # on a run too short to measure how far its stretches wander, it must beat the noise
        # the live rule assumes there (AR(1), thresholds.live.rho), not white noise.
        metric = signals.read(
            crit.name, raw, crit.higher_is_better, thresholds.metric, settled, thresholds.live.rho
        )
    return _Look(loss, metric, raw)


def _judge(
    curves: Curves,
    look: _Look,
    crit: Criterion,
    thresholds: Thresholds,
    n_classes: int | None,
    held: Mapping[str, _Held] | None = None,
    *,
    counted: frozenset[str] = frozenset(),
    was_underfit: bool = False,
    adjacent: bool = False,
    live: bool = False,
) -> Diagnosis:
    """The verdict on the epochs as they stand, read as ``look``; ``held``: for a run looked at
    before, the signals degraded at the previous look, by name, with the epoch each was best at;
    ``counted``: those of them the previous look's overfitting verdict rested on;
    ``was_underfit``: the previous look said underfitting, which then holds until the losses part
    by twice the gap that let it in; ``adjacent``: that look was at the evaluation just before
    (only then is a newly degraded signal pending: a batch of evaluations appended at once is its
    own evidence); ``live``: the run is still training, so a model that still learns is not
    judged underfitting yet (a finished run still falling is: it should have trained longer)."""
    n = len(curves)
    train, valid = curves.train_loss, curves.valid_loss
    loss, metric, raw = look
    pending: set[str] = set()
    loss_counted = metric_counted = False
    if held is not None:
        loss, loss_counted = _held_over(loss, "valid_loss", held, counted, curves.epochs)
        if metric is not None:
            metric, metric_counted = _held_over(metric, "metric", held, counted, curves.epochs)
        if adjacent:
            pending = {
                name
                for name, r in (("valid_loss", loss), ("metric", metric))
                if r is not None and r.degraded and name not in held
            }
    fit = training(train, thresholds, loss.best_value)
    if not fit.learned and (_reach(crit, metric, n_classes) or 0.0) >= thresholds.underfit_reach:
        # A training loss that barely moved from a first epoch already far up the metric's way
        # to its ceiling (a fine-tune, a frozen body) learned within that epoch, whose average
        # holds what it learned.
        fit = fit._replace(learned=True)
    judged = metric or loss
    still_improving = signals.still_improving(judged, valid if raw is None else raw)
    falling = _still_falling(train, _stretch(n), thresholds)
    # While the run trains, a model that still learns is not judged underfitting yet; once said,
    # underfitting is not released by one look that learns again.
    waits = live and not was_underfit

    memorises = _memorises(train, fit, thresholds, n_classes)
    guessed = (
        chance(valid, crit, raw, metric, loss, n_classes, thresholds)
        if metric is not None and raw is not None and (memorises or n_classes is not None)
        else None
    )
    guess = guessed if memorises else None
    # A metric that never clearly beat guessing, by the class count, leaves nothing to keep:
    # whatever the validation signals do, the model has not learned the task yet.
    learned_nothing = guessed is not None and n_classes is not None and not guessed.beaten
    metric_worse = (
        metric is not None
        and "metric" not in pending
        and counts(metric, train, fit, thresholds, was_underfit, metric_counted)
    )
    loss_rises = "valid_loss" not in pending and counts(
        loss, train, fit, thresholds, was_underfit, loss_counted
    )
    overconfident = (
        loss_rises
        and metric is not None
        and raw is not None
        and not metric_worse
        and signals.improving_since(metric, raw, loss.best)
    )

    signal: Signal | None = None
    deciding = judged
    instability: str | None = None
    high_rate = _schedule_high(curves, thresholds)
    if (
        fit.worsening
        and (fit.rise >= thresholds.diverging_share * fit.span or judged.degraded or loss_rises)
        and not (was_underfit and train[-1] < train[-2])
    ):
        verdict = Verdict.DIVERGING
    elif guess is not None and not guess.beaten and not high_rate:
        verdict = Verdict.NO_SIGNAL
    elif not fit.learned or (learned_nothing and not high_rate):
        # A model that never fit its own training data, or never scored above chance, is not
        # overfitting, whatever the validation signals do while it wanders; while it still
        # trains, a young run or one still learning is not judged yet.
        young = n < thresholds.metric.measurable
        learning = young or falling or still_improving
        verdict = Verdict.HEALTHY if waits and learning else Verdict.UNDERFITTING
    elif (
        metric_worse
        or (loss.degraded and "valid_loss" not in pending)
        or (guess is not None and not guess.beaten)
    ) and (
        instability := _unsettled(
            curves, loss, fit, thresholds, high_rate, loss_counted or metric_counted
        )
    ):
        verdict = Verdict.UNSTABLE
    elif metric_worse:
        verdict, signal = Verdict.OVERFITTING, Signal.BOTH if loss_rises else Signal.METRIC
    elif loss_rises and not overconfident:
        verdict, signal, deciding = Verdict.OVERFITTING, Signal.VALID_LOSS, loss
    elif (
        not overconfident
        and _underfit(
            curves, crit, metric, fit, n_classes, thresholds, 2.0 if was_underfit else 1.0
        )
        and not (waits and (falling or still_improving))
    ):
        verdict = Verdict.UNDERFITTING
    else:
        verdict = Verdict.HEALTHY

    overfit = verdict == Verdict.OVERFITTING
    onset = deciding.onset if overfit else fit.min_at + 1 if verdict == Verdict.DIVERGING else None
    if overfit and signal == Signal.BOTH and loss.onset is not None:
        onset = min(onset if onset is not None else n, loss.onset)
    return _diagnosis(
        curves,
        crit,
        raw,
        pending=sorted(pending),
        verdict=verdict,
        signal=signal,
        deciding=deciding,
        readings=(metric, loss),
        fit=fit,
        onset=onset,
        still_improving=still_improving,
        falling=falling,
        overconfident=overconfident,
        guess=guess,
        severity=max(
            (_severity(r, thresholds, r is loss) for r in (deciding, loss) if r.degraded),
            key=list(Severity).index,
            default=Severity.MILD,
        )
        if overfit
        else Severity.NONE,
        instability=instability,
        thresholds=thresholds,
    )


def _rate_peak(curves: Curves) -> tuple[list[float], int] | None:
    """The reported learning rates and where the highest was, when the rate rose to it (a
    warm-up, a one-cycle); None without a schedule that rose."""
    rates = [v for v in curves.lr if v is not None]
    if len(rates) < 2:
        return None
    peak_at = series.argmin(series.negated(rates))
    return (rates, peak_at) if peak_at > 0 and rates[peak_at] > rates[0] else None


def _settled(curves: Curves, thresholds: Thresholds) -> int:
    """Where a reported learning-rate schedule came down from its peak (below
    ``lr_peak_share`` of it, after rising to it), when every evaluation carries its rate and
    enough of them follow to measure noise on; else 0."""
    peak = _rate_peak(curves)
    if peak is None or len(peak[0]) != len(curves):
        return 0
    rates, peak_at = peak
    floor = thresholds.lr_peak_share * rates[peak_at]
    after = next((i for i in range(peak_at, len(rates)) if rates[i] < floor), len(rates))
    return after if len(rates) - after >= thresholds.metric.measurable else 0


def _schedule_high(curves: Curves, thresholds: Thresholds) -> bool:
    """The reported learning rate rose to where it is now and stays near that peak: a warm-up,
    or a one-cycle's high phase, where the validation signals swing until the rate comes down."""
    peak = _rate_peak(curves)
    if peak is None:
        return False
    rates, peak_at = peak
    return rates[-1] >= thresholds.lr_peak_share * rates[peak_at]


def _unsettled(
    curves: Curves,
    loss: Reading,
    fit: Training,
    thresholds: Thresholds,
    high_rate: bool,
    memorising: bool,
) -> str | None:
    """Why a degraded validation signal is instability rather than overfitting: the learning
    rate is in its high phase (``high_rate``, :func:`_schedule_high`), or the validation loss
    jumped: it blew up recently (one evaluation ``blow_up`` times the one before it) or rose
    while the training loss barely moved, for a model that has not memorised its training set.
    A rise the previous look's overfitting rested on (``memorising``) is memorisation going on:
    its growing past the training loss's fall does not make it a jump."""
    if high_rate:
        return "schedule"
    if not loss.degraded:
        return None
    valid = curves.valid_loss
    # A blow-up explains the run as it stands only while it is recent (within the evaluations
    # it takes to measure noise): long after one, a validation loss still up there while
    # training went on is what the model did since, not the optimisation's state now.
    after = valid[max(loss.best, len(valid) - thresholds.metric.measurable - 1) :]
    if any(map(gt, after[1:], map(mul, after[:-1], repeat(thresholds.blow_up)))):
        return "jump"
    train = curves.train_loss
    fall = series.rel(train[loss.best] - fit.tail, train[loss.best])
    # A training loss that fell by a good share has not barely moved, however far a validation
    # loss from a best near zero rose in relative terms.
    if (
        not memorising
        and not fit.memorised
        and fall < thresholds.memorised_drop
        and loss.degradation > thresholds.unstable_ratio * max(fall, 0.01)
    ):
        return "jump"
    return None


def _memorises(
    train: list[float], fit: Training, thresholds: Thresholds, n_classes: int | None
) -> bool:
    """The training loss fell by a good share after the first epoch, whose average often mixes
    in the loss of the untrained model, and, for n classes, below ``underfit_chance`` times
    ln(n): a model still fitting its training data no better than that has memorised nothing
    yet, and its metric may still leave chance behind."""
    start = train[1] if len(train) > 1 else train[0]
    if start - fit.tail <= thresholds.memorised_drop * start:
        return False
    guessing = _guessing_loss(n_classes, thresholds)
    return guessing is None or fit.tail < guessing


def _guessing_loss(n_classes: int | None, thresholds: Thresholds) -> float | None:
    """``underfit_chance`` times ln(n), the cross-entropy of guessing among n classes: a loss
    above it fits no better than that, for underfitting and memorising alike; None without a
    class count."""
    if n_classes is None or n_classes < 2:
        return None
    return thresholds.underfit_chance * math.log(n_classes)


def _underfit(
    curves: Curves,
    crit: Criterion,
    metric: Reading | None,
    fit: Training,
    n_classes: int | None,
    thresholds: Thresholds,
    widen_gap: float = 1.0,
) -> bool:
    """The model cannot fit its own training data as far as the task allows: it never learned,
    or, past its first handful of epochs, its training loss sits close to the validation loss
    and high for the task (judged by the metric's distance from its ceiling when it is bounded,
    else by chance's cross-entropy for a known class count), whether it has plateaued there (a
    larger model, less regularization) or still falls steadily (train longer). A model that
    fits as well as it generalises and scores near the ceiling is converged, not underfitting;
    so is one with nothing to say what its task allows whose loss came well down from its
    first value and stopped there: how far a loss came does not tell how far it could go."""
    train, valid = curves.train_loss, curves.valid_loss
    if not fit.learned:
        return True
    # A handful of epochs show a young model, not what it can reach.
    if len(train) < thresholds.metric.measurable or not _close(
        train, valid, fit, thresholds, widen_gap
    ):
        return False
    reach = _reach(crit, metric, n_classes)
    if reach is not None:
        return reach < thresholds.underfit_reach
    guessing = _guessing_loss(n_classes, thresholds)
    if guessing is not None:
        # Both losses high for the task: a validation loss well below it says the model fits
        # the task, whatever a training loss logged from single noisy batches (or under
        # dropout and augmentation) reads.
        ended = min(fit.tail, series.mean(valid[-series.tail_length(len(valid)) :]))
        return ended > guessing
    return fit.tail > thresholds.underfit_share * train[0]


def _reach(crit: Criterion, metric: Reading | None, n_classes: int | None) -> float | None:
    """The share of the way from chance to its ceiling that a bounded metric's best stretch
    covered; None for a metric with no ceiling, or none."""
    top = ceiling(crit.name) if metric is not None else None
    if metric is None or top is None:
        return None
    base = chance_level(crit.name, n_classes)
    if base is None:
        base = 0.0 if crit.higher_is_better else 1.0
    # Signed so that a lower-is-better metric (an error rate, whose ceiling 0 lies below
    # chance) counts its gain as positive.
    return (metric.best_stretch - base) / (top - base) if top != base else 1.0


def _stretch(n: int) -> int:
    """Epochs compared to tell whether the training loss still falls: at least two."""
    return max(2, series.tail_length(n))


def _close(
    train: list[float],
    valid: list[float],
    fit: Training,
    thresholds: Thresholds,
    widen_gap: float = 1.0,
) -> bool:
    """The validation loss ends within ``underfit_gap`` (relative, times ``widen_gap``) of the
    training loss."""
    k = _stretch(len(train))
    return series.mean(valid[-k:]) - fit.tail < widen_gap * thresholds.underfit_gap * fit.tail


def _still_falling(train: list[float], k: int, thresholds: Thresholds) -> bool:
    """The training loss's last stretch of ``k`` epochs is clearly below the stretch before."""
    before = train[-2 * k : -k] if len(train) >= 2 * k + 1 else train[:-k]
    if not before:
        return False
    previous = series.mean(before)
    return previous - series.mean(train[-k:]) > thresholds.still_falling * k * previous


def _diagnosis(
    curves: Curves,
    crit: Criterion,
    raw: list[float] | None,
    *,
    pending: list[str],
    verdict: Verdict,
    signal: Signal | None,
    deciding: Reading,
    readings: tuple[Reading | None, Reading],
    fit: Training,
    onset: int | None,
    still_improving: bool,
    falling: bool,
    overconfident: bool,
    guess: Chance | None,
    severity: Severity,
    instability: str | None,
    thresholds: Thresholds,
) -> Diagnosis:
    """The one place a judged run's diagnosis and evidence are put together; ``raw``: the
    metric's values, when the run is judged by one."""
    epochs, train, valid = curves.epochs, curves.train_loss, curves.valid_loss
    metric, loss = readings
    judged = metric or loss
    # A first epoch that the metric did beat is no chance level worth showing.
    if guess is not None and guess.source == "first_epoch" and guess.beaten:
        guess = None
    stop, candidates = _kept(curves, crit, metric, loss, raw)
    train_change = series.rel(fit.tail - train[stop], train[stop])
    readings_out = {r.name if r is loss else "metric": r.to_dict(epochs) for r in readings if r}
    # A training loss that still falls while the metric sits below its best, or the validation
    # loss above its own, is memorising, not learning: no reason to train longer.
    below = "metric" in readings_out and raw is not None and _off_best(readings_out["metric"], raw)
    loss_above = _off_best(readings_out["valid_loss"], valid)
    perfect = _perfect(crit.name, judged.last_value)
    evidence = Evidence(
        criterion=crit.name,
        higher_is_better=crit.higher_is_better,
        n_epochs=len(curves),
        best_epoch=epochs[judged.best],
        last_epoch=epochs[-1],
        best_value=judged.best_value,
        last_value=judged.last_value,
        signal=signal,
        stop_epoch=epochs[stop],
        onset_epoch=epochs[onset] if onset is not None and onset < len(epochs) else None,
        metric_degradation=_last_vs_best(metric),
        valid_loss_degradation=_last_vs_best(loss),
        train_loss_change=train_change,
        train_loss_trend=(
            "improving" if train_change < -0.01 else "worsening" if train_change > 0.01 else "flat"
        ),
        generalization_gap=valid[-1] - train[-1],
        gap_ratio=valid[-1] / train[-1] if train[-1] > 0 else None,
        noise=deciding.noise,
        threshold=deciding.threshold,
        tail_epochs=series.tail_length(len(curves)),
        still_improving=still_improving,
        overconfident=overconfident,
        chance=guess.level if guess else None,
        chance_source=guess.source if guess else None,
        severity=severity,
        signals=readings_out,
        candidates=[epochs[i] for i in candidates],
        pending=pending,
        instability=instability,
        lr=curves.lr[-1] if curves.lr else None,
        lr_peak=max((v for v in curves.lr if v is not None), default=None),
        unit="step" if curves.steps else "epoch",
        stop_step=curves.steps[stop] if curves.steps else None,
        stop_value=(valid if raw is None else raw)[stop],
        train_loss_missing=curves.train_missing,
        still_learning=verdict == Verdict.HEALTHY
        and not perfect
        and (still_improving or (falling and not below and not loss_above)),
        converged=verdict == Verdict.HEALTHY
        and (
            perfect
            or (not still_improving and not falling and _close(train, valid, fit, thresholds))
        ),
        train_loss_falling=falling,
    )
    summary = _summary(verdict, evidence, deciding, fit, curves, below, loss_above)
    if curves.train_missing:
        summary += (
            f" ({curves.train_missing} evaluations came without a training loss; it was "
            "interpolated from the ones around them.)"
        )
    return Diagnosis(verdict, epochs[judged.best], summary, evidence)


def _kept(
    curves: Curves,
    crit: Criterion,
    metric: Reading | None,
    loss: Reading,
    raw: list[float] | None,
) -> tuple[int, list[int]]:
    """The epoch whose weights to keep, and the epochs it was chosen among. With a metric, what
    the user scores the model by comes first: the epochs whose metric is within its noise (and
    at most ``KEEP_TOLERANCE`` of its best, relative) of the best, and among those the one with
    the lowest validation loss, the better calibrated model. Without one, the lowest validation
    loss."""
    if metric is None or raw is None:
        return loss.best, [loss.best]
    tolerance = min(metric.noise, KEEP_TOLERANCE * abs(metric.best_value))
    # Within the tolerance of the best, on the better side of best - tolerance (C-level maps:
    # this runs on every look).
    if crit.higher_is_better:
        near_best = map(ge, raw, repeat(metric.best_value - tolerance))
    else:
        near_best = map(le, raw, repeat(metric.best_value + tolerance))
    near = list(compress(range(len(raw)), near_best))
    valid = curves.valid_loss
    return min(near, key=valid.__getitem__), near[-MAX_CANDIDATES:]


# The kept epoch's metric may sit this far (relative) below the best, to win a lower loss.
KEEP_TOLERANCE = 0.005
MAX_CANDIDATES = 5


def _last_vs_best(reading: Reading | None) -> float | None:
    if reading is None:
        return None
    change = series.rel(reading.last_value - reading.best_value, reading.best_value)
    return (-change if reading.higher_is_better else change) + 0.0  # no "-0.0" in the evidence


def _summary(
    verdict: Verdict,
    ev: Evidence,
    deciding: Reading,
    fit: Training,
    curves: Curves,
    below: bool,
    loss_above: bool,
) -> str:
    """The answer in words; ``below``, ``loss_above``: the metric sits beyond its noise below
    its best, the validation loss above its own (:func:`_off_best`)."""

    def at(epoch: Epoch | None) -> str:
        return curves.at(curves.epochs.index(epoch)) if epoch in curves.epochs else "?"

    train, valid = curves.train_loss, curves.valid_loss
    kept = f"Keep the weights of {at(ev.stop_epoch)} ({ev.criterion} {ev.stop_value:.4g}" + (
        f"; best {ev.best_value:.4g} at {at(ev.best_epoch)})."
        if ev.stop_epoch != ev.best_epoch
        else ", the best)."
    )
    if verdict == Verdict.DIVERGING:
        return (
            f"Training loss rose from {train[fit.min_at]:.4g} ({curves.at(fit.min_at)}) to "
            f"{fit.tail:.4g} at the end: the optimisation itself is getting worse. Lower the "
            "learning rate."
        )
    if verdict == Verdict.UNSTABLE:
        loss = ev.signals["valid_loss"]
        why = (
            f"while the learning rate was at {ev.lr:.3g}, near the peak of its schedule "
            f"({ev.lr_peak:.3g}): let the schedule decay (or lower the peak rate) before judging "
            "overfitting"
            if ev.instability == "schedule" and ev.lr is not None and ev.lr_peak is not None
            else "while the training loss barely moved: the optimisation is unstable, not "
            "memorising. Lower the learning rate, or let the schedule decay"
        )
        return (
            f"The validation loss went from {loss['best_value']:.4g} ({at(loss['best_epoch'])})"
            f" to {loss['last_value']:.4g} {why}. {kept}"
        )
    if verdict == Verdict.NO_SIGNAL:
        where = (
            "chance for the number of classes"
            if ev.chance_source == "n_classes"
            else f"its first {ev.unit}"
        )
        return (
            f"{ev.criterion} never clearly beat {where} ({ev.chance:.4g}; best {ev.best_value:.4g}"
            f") while the training loss fell from {train[0]:.4g} to {fit.tail:.4g}: the model "
            "memorises its training set and learns nothing that carries over. Check the data "
            "before any remedy: labels shuffled or wrong, training and validation data from "
            "different sources, a split or preprocessing bug."
        )
    metric = ev.signals.get("metric")
    near_best = not (below if metric is not None else loss_above)
    if verdict == Verdict.OVERFITTING:
        both = " (and the validation loss rose with it)" if ev.signal == Signal.BOTH else ""
        flat = " while"
        if ev.signal == Signal.VALID_LOSS and metric is not None:
            flat = (
                f" while {ev.criterion} stayed within its noise of its best and"
                if near_best
                else f" while {ev.criterion} ended at {metric['last_value']:.4g} and"
            )
        change = series.rel(deciding.last_value - deciding.best_value, deciding.best_value)
        return (
            f"{deciding.name} was best at {curves.at(deciding.best)} "
            f"({deciding.best_value:.4g}) and ended {abs(change):.1%} worse "
            f"({deciding.last_value:.4g}){both}{flat} the "
            f"training loss kept {'falling' if ev.train_loss_trend == 'improving' else 'steady'}"
            f": {ev.severity} overfitting. {kept}"
        )
    gap = f"training {train[-1]:.4g}, validation {valid[-1]:.4g}"
    if verdict == Verdict.UNDERFITTING:
        close = abs(valid[-1] - train[-1]) < 0.1 * train[-1]
        losses = f" and close to the validation loss ({gap})" if close else f" ({gap})"
        if ev.train_loss_falling:
            return (
                "The model is still far from fitting its training data: its training loss, "
                f"{fit.tail / train[0]:.0%} of its first value{losses}, still falls steadily. "
                "Train longer, or at a higher learning rate."
            )
        return (
            "The model does not fit even its training data: its training loss stopped at "
            f"{fit.tail / train[0]:.0%} of its first value, high for the task{losses}. Use a "
            "larger model or less regularization."
        )
    confident = (
        f" The validation loss rose since {at(ev.signals['valid_loss']['best_epoch'])} while "
        f"{ev.criterion} kept improving: the model grows over-confident, which the metric does "
        "not punish."
        if ev.overconfident
        else ""
    )
    loss = ev.signals["valid_loss"]

    def risen() -> str:
        # Said only for a loss beyond its noise above its best: most answers never need it.
        rise = series.rel(loss["last_value"] - loss["best_value"], loss["best_value"])
        return (
            f"the validation loss ended {rise:.1%} above its best ({loss['best_value']:.4g} at "
            f"{at(loss['best_epoch'])})"
        )

    # A rise one of the loss's weak rules saw, which counts only while the training loss keeps
    # falling to new lows.
    weak = (
        ", beyond its noise; it counts as overfitting while the training loss keeps falling to "
        "new lows with it, which its latest evaluations did not"
    )
    if near_best:
        standing = (
            f"{ev.criterion} is at or near its best ({ev.best_value:.4g} at {at(ev.best_epoch)})"
        )
    elif metric is None:
        standing = risen() + (weak if loss["degraded"] else ", within its noise")
    else:
        short = abs(series.rel(metric["last_value"] - metric["best_value"], metric["best_value"]))
        # Worse is lower for an accuracy and higher for an error (MAE ended 8.7% above its best).
        side = "below" if metric["higher_is_better"] else "above"
        standing = (
            f"{ev.criterion} ended at {metric['last_value']:.4g}, {short:.1%} {side} its best "
            f"({metric['best_value']:.4g} at {at(metric['best_epoch'])}), a dip the run's own "
            "swings can explain"
        )
    watching = (
        f" {' and '.join(ev.pending)} got worse beyond its noise at this evaluation; the next "
        "one tells whether that holds."
        if ev.pending
        else ""
    )
    confident += watching
    if ev.still_learning:
        return (
            f"Still learning: {standing}, and "
            + (
                f"{ev.criterion} is still improving"
                if ev.still_improving
                else "the training loss still falls"
            )
            + f"; too early to judge what it can reach. Train longer.{confident}"
        )
    if ev.converged:
        if _perfect(ev.criterion, ev.last_value):
            return (
                f"Converged: {standing}, and {ev.last_value:g} is the best {ev.criterion} can "
                f"be: nothing to cure.{confident}"
            )
        return (
            f"Converged: {standing}, with the training and validation losses close ({gap}) and "
            f"the training loss flat: nothing to cure.{confident}"
        )
    if ev.train_loss_falling and loss_above:
        said = f"{standing}; {risen()}" if metric is not None else risen()
        if loss["degraded"]:
            return f"{said}{weak}. No reason to train longer.{confident}"
        return (
            f"{said}, within its noise so far, while the training loss still falls: no clear "
            f"sign of overfitting yet, and no reason to train longer.{confident}"
        )
    return f"{standing}; no {'clear ' if loss_above else ''}sign of overfitting.{confident}"


def _perfect(criterion: str, value: float | None) -> bool:
    """The metric ended at its ceiling (accuracy 1, error rate 0): there is nothing left to
    learn, however the training loss still moves."""
    return value is not None and ceiling(criterion) == value


def _off_best(reading: dict[str, Any], raw: list[float]) -> bool:
    """A signal's last stretch, and its last value, sit more than its noise worse than its best
    (a run whose last evaluation is its best is at its best, whatever came just before)."""
    k = series.tail_length(len(raw))
    sign = 1.0 if reading["higher_is_better"] else -1.0
    best: float = sign * reading["best_value"]
    noise: float = reading["noise"]
    return min(best - sign * series.mean(raw[-k:]), best - sign * raw[-1]) > noise


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
            last_epoch=curves.epochs[-1] if n else None,
            generalization_gap=curves.valid_loss[-1] - curves.train_loss[-1] if n else None,
        ),
    )
