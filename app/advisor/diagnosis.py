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

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

from app.advisor import series, signals
from app.advisor.curves import Criterion, Curves, chance_level, infer_criterion
from app.advisor.signals import Floors, Reading


class Verdict(StrEnum):
    OVERFITTING = "overfitting"
    HEALTHY = "healthy"
    UNDERFITTING = "underfitting"
    DIVERGING = "diverging"
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


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Tuning knobs. Losses move proportionally more than bounded metrics, hence separate floors."""

    min_epochs: int = 4
    # Evaluations in a row a stop verdict must be worth stopping on before the live rule stops.
    live_looks: int = 2
    live: signals.Sequential = field(default_factory=signals.Sequential)
    loss: Floors = field(default_factory=lambda: Floors(full=0.03))
    # The steady rule reads the loss only: a bounded metric slipping for two epochs is too common
    # on healthy runs to mean anything before its noise can be measured.
    metric: Floors = field(default_factory=lambda: Floors(full=0.015, steady=None, held_share=None))
    # Relative degradation at which overfitting becomes moderate / severe.
    severity_loss: tuple[float, float] = (0.15, 0.5)
    severity_metric: tuple[float, float] = (0.04, 0.12)
    # The training loss "keeps falling" after the validation loss's best epoch: it fell since by
    # at least this fraction, and by more than its own jitter.
    train_fall: float = 0.03
    # Training loss that fell by less than this fraction of its first value did not learn.
    not_learning_drop: float = 0.05
    # Underfit: the training loss ends above this share of its first value while sitting within
    # ``underfit_gap`` (relative) of the validation loss: the model has not fit the data it sees.
    underfit_share: float = 0.4
    underfit_gap: float = 0.1
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


class Chance(NamedTuple):
    level: float
    source: str  # "n_classes" or "first_epoch"
    beaten: bool


class Evidence(NamedTuple):
    criterion: str
    higher_is_better: bool
    n_epochs: int
    best_epoch: int | None = None
    last_epoch: int | None = None
    best_value: float | None = None
    last_value: float | None = None
    signal: Signal | None = None
    stop_epoch: int | None = None
    onset_epoch: int | None = None
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
    # Epochs the kept one is chosen among: the metric within its noise of its best (for a
    # callback to keep copies of, since a later evaluation may move the choice among them).
    candidates: list[int] = []


@dataclass(frozen=True, slots=True)
class Diagnosis:
    verdict: Verdict
    best_epoch: int | None
    summary: str
    evidence: Evidence
    # The live rule's answer for a run still training: stop now (and keep ``stop_epoch``).
    should_stop: bool = False

    @property
    def stop_epoch(self) -> int | None:
        return self.evidence.stop_epoch

    @property
    def onset_epoch(self) -> int | None:
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


def training(train: list[float], thresholds: Thresholds) -> Training:
    """Whether the optimisation itself is getting worse: its last stretch above its best stretch
    beyond noise, or doubled (an oscillating blow-up is its own "noise"), or above where training
    started. Stretches, not single epochs, because some frameworks log a noisy last-batch loss."""
    n = len(train)
    k = series.tail_length(n)
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
        worsening = stretch.lowest_start + k - 1 < n - k and (
            rise_stretch > low_stretch
            or (
                rise_stretch > thresholds.train_rise_rel * low_stretch
                and rise_stretch > thresholds.loss.z * series.noise(train)
            )
        )
    learned = train[0] - low >= thresholds.not_learning_drop * train[0]
    return Training(min_at, tail, worsening, rise, max(train) - low, learned)


def keeps_falling(train: list[float], since: int, fit: Training, thresholds: Thresholds) -> bool:
    """The training loss fell clearly from epoch index ``since`` to the end."""
    fall = train[since] - fit.tail
    return fall > thresholds.train_fall * train[since] and series.mostly_rising(
        series.negated(train[since:]), 0
    )


_WEAK = (signals.Rule.STEADY, signals.Rule.HELD)


def counts(reading: Reading, train: list[float], fit: Training, thresholds: Thresholds) -> bool:
    """A degraded signal counts against the model while its training loss does not get worse;
    the weak rules (steady, held) only while it keeps falling since the signal's best."""
    if reading.rule in _WEAK:
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
    # Jitter measured on a handful of epochs is mostly trend: it would hide a clear gain.
    jitter = metric.noise if len(raw) >= thresholds.metric.measurable else 0.0
    if level is not None:
        margin = max(thresholds.metric.z * jitter, thresholds.chance_margin * abs(level))
        return Chance(level, "n_classes", best_stretch - sign * level > margin)
    # The first epoch stands in for chance only where it could be chance: below what guessing
    # between two classes scores, for metrics with a known chance level, and on a validation
    # loss that rose from the start (memorised labels make confident mistakes).
    level = raw[0]
    margin = max(metric.threshold, thresholds.metric.z * metric.noise)
    highest_chance = chance_level(crit.name, 2)
    beaten = (
        len(raw) < thresholds.first_epoch_min_epochs
        or (highest_chance is not None and sign * (level - highest_chance) > 0)
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
) -> Diagnosis:
    """Diagnose epochs given in order. ``criterion`` defaults to :func:`infer_criterion`;
    ``n_classes`` (from the report) sets the chance level of accuracy-like metrics.

    ``should_stop`` is the live rule, stricter than the verdict because a stop cannot be taken
    back and a run still training is looked at again after every evaluation: the stop verdict
    must pass :func:`_stop_worthy` at each of the last ``thresholds.live_looks`` evaluations."""
    crit = criterion or infer_criterion(curves)
    judged = _judge(curves, crit, thresholds, n_classes)
    if not _stop_worthy(curves, judged, thresholds):
        return judged
    n = len(curves)
    held = all(
        _stop_worthy(head, _judge(head, crit, thresholds, n_classes), thresholds)
        for head in (curves.head(n - back) for back in range(1, thresholds.live_looks))
    )
    return replace(judged, should_stop=True) if held else judged


def _stop_worthy(curves: Curves, judged: "Diagnosis", thresholds: Thresholds) -> bool:
    """A verdict worth stopping on: diverging, no signal, or overfitting that is either severe or,
    on a run long enough to measure its noise, a rise that noise could not have made at any of
    the looks so far (:func:`signals.clear_of_noise`)."""
    if judged.verdict not in STOP_VERDICTS:
        return False
    if judged.verdict != Verdict.OVERFITTING:
        return True
    ev = judged.evidence
    if ev.severity == Severity.SEVERE:
        return True
    if len(curves) < thresholds.metric.measurable:
        return False
    if ev.signal == Signal.VALID_LOSS:
        return signals.clear_of_noise(curves.valid_loss, thresholds.live)
    raw = curves.metric(ev.criterion)
    return signals.clear_of_noise(
        series.negated(raw) if ev.higher_is_better else raw, thresholds.live
    )


def _judge(
    curves: Curves, crit: Criterion, thresholds: Thresholds, n_classes: int | None
) -> Diagnosis:
    """The verdict on the epochs as they stand."""
    n = len(curves)
    if n < thresholds.min_epochs:
        return _insufficient(curves, crit, thresholds)

    train, valid = curves.train_loss, curves.valid_loss
    loss = signals.read("valid_loss", valid, False, thresholds.loss)
    raw = None if crit.is_loss else curves.metric(crit.name)
    metric = None
    if raw is not None:
        metric = signals.read(crit.name, raw, crit.higher_is_better, thresholds.metric)
    fit = training(train, thresholds)
    judged = metric or loss

    guess = None
    if metric is not None and raw is not None and _memorises(train, fit, thresholds):
        guess = chance(valid, crit, raw, metric, loss, n_classes, thresholds)
    metric_worse = metric is not None and counts(metric, train, fit, thresholds)
    loss_rises = counts(loss, train, fit, thresholds)
    overconfident = (
        loss_rises
        and metric is not None
        and raw is not None
        and not metric_worse
        and signals.improving_since(metric, raw, loss.best)
    )

    signal: Signal | None = None
    deciding = judged
    if fit.worsening and (
        fit.rise >= thresholds.diverging_share * fit.span or judged.degraded or loss_rises
    ):
        verdict = Verdict.DIVERGING
    elif guess is not None and not guess.beaten:
        verdict = Verdict.NO_SIGNAL
    elif not fit.learned:
        # A model that never fit its own training data is not overfitting, whatever the
        # validation signals do while it wanders.
        verdict = Verdict.UNDERFITTING
    elif metric_worse:
        verdict, signal = Verdict.OVERFITTING, Signal.BOTH if loss_rises else Signal.METRIC
    elif loss_rises and not overconfident:
        verdict, signal, deciding = Verdict.OVERFITTING, Signal.VALID_LOSS, loss
    elif not overconfident and _underfit(train, valid, fit, thresholds):
        verdict = Verdict.UNDERFITTING
    else:
        verdict = Verdict.HEALTHY

    still_improving = signals.still_improving(judged, valid if raw is None else raw)

    overfit = verdict == Verdict.OVERFITTING
    onset = deciding.onset if overfit else fit.min_at + 1 if verdict == Verdict.DIVERGING else None
    if overfit and signal == Signal.BOTH and loss.onset is not None:
        onset = min(onset if onset is not None else n, loss.onset)
    return _diagnosis(
        curves,
        crit,
        verdict=verdict,
        signal=signal,
        deciding=deciding,
        readings=(metric, loss),
        fit=fit,
        onset=onset,
        still_improving=still_improving,
        overconfident=overconfident,
        guess=guess,
        severity=_severity(deciding, thresholds, deciding is loss) if overfit else Severity.NONE,
    )


def _memorises(train: list[float], fit: Training, thresholds: Thresholds) -> bool:
    """The training loss fell by a good share after the first epoch, whose average often mixes
    in the loss of the untrained model."""
    start = train[1] if len(train) > 1 else train[0]
    return start - fit.tail > thresholds.memorised_drop * start


def _underfit(
    train: list[float], valid: list[float], fit: Training, thresholds: Thresholds
) -> bool:
    """The training loss barely moved, or ended high and close to the validation loss."""
    k = series.tail_length(len(train))
    return not fit.learned or (
        fit.tail > thresholds.underfit_share * train[0]
        and series.mean(valid[-k:]) - fit.tail < thresholds.underfit_gap * fit.tail
    )


def _diagnosis(
    curves: Curves,
    crit: Criterion,
    *,
    verdict: Verdict,
    signal: Signal | None,
    deciding: Reading,
    readings: tuple[Reading | None, Reading],
    fit: Training,
    onset: int | None,
    still_improving: bool,
    overconfident: bool,
    guess: Chance | None,
    severity: Severity,
) -> Diagnosis:
    """The one place a judged run's diagnosis and evidence are put together."""
    epochs, train, valid = curves.epochs, curves.train_loss, curves.valid_loss
    metric, loss = readings
    judged = metric or loss
    # A first epoch that the metric did beat is no chance level worth showing.
    if guess is not None and guess.source == "first_epoch" and guess.beaten:
        guess = None
    stop, candidates = _kept(curves, crit, metric, loss)
    train_change = series.rel(fit.tail - train[stop], train[stop])
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
        signals={r.name if r is loss else "metric": r.to_dict(epochs) for r in readings if r},
        candidates=[epochs[i] for i in candidates],
    )
    summary = _summary(verdict, evidence, deciding, fit, curves)
    return Diagnosis(verdict, epochs[judged.best], summary, evidence)


def _kept(
    curves: Curves, crit: Criterion, metric: Reading | None, loss: Reading
) -> tuple[int, list[int]]:
    """The epoch whose weights to keep, and the epochs it was chosen among. With a metric, what
    the user scores the model by comes first: the epochs whose metric is within its noise (and
    at most ``KEEP_TOLERANCE`` of its best, relative) of the best, and among those the one with
    the lowest validation loss, the better calibrated model. Without one, the lowest validation
    loss."""
    if metric is None:
        return loss.best, [loss.best]
    raw = curves.metric(crit.name)
    sign = 1.0 if crit.higher_is_better else -1.0
    best = sign * metric.best_value
    tolerance = min(metric.noise, KEEP_TOLERANCE * abs(metric.best_value))
    near = [i for i, v in enumerate(raw) if best - sign * v <= tolerance]
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
    verdict: Verdict, ev: Evidence, deciding: Reading, fit: Training, curves: Curves
) -> str:
    epochs, train, valid = curves.epochs, curves.train_loss, curves.valid_loss
    if verdict == Verdict.DIVERGING:
        return (
            f"Training loss rose from {train[fit.min_at]:.4g} (epoch {epochs[fit.min_at]}) to "
            f"{fit.tail:.4g} at the end: the optimisation itself is getting worse. Lower the "
            "learning rate."
        )
    if verdict == Verdict.NO_SIGNAL:
        where = (
            "chance for the number of classes"
            if ev.chance_source == "n_classes"
            else "its first epoch"
        )
        return (
            f"{ev.criterion} never clearly beat {where} ({ev.chance:.4g}; best {ev.best_value:.4g}"
            f") while the training loss fell from {train[0]:.4g} to {fit.tail:.4g}: the model "
            "memorises its training set and learns nothing that carries over. Check the data "
            "before any remedy: labels shuffled or wrong, training and validation data from "
            "different sources, a split or preprocessing bug."
        )
    if verdict == Verdict.OVERFITTING:
        both = " (and the validation loss rose with it)" if ev.signal == Signal.BOTH else ""
        flat = (
            f" while {ev.criterion} stayed flat within its noise and"
            if ev.signal == Signal.VALID_LOSS and ev.criterion != "valid_loss"
            else " while"
        )
        change = series.rel(deciding.last_value - deciding.best_value, deciding.best_value)
        return (
            f"{deciding.name} was best at epoch {ev.stop_epoch} ({deciding.best_value:.4g}) and "
            f"ended {abs(change):.1%} worse ({deciding.last_value:.4g}){both}{flat} the "
            f"training loss kept {'falling' if ev.train_loss_trend == 'improving' else 'steady'}"
            f": {ev.severity} overfitting. Keep the weights of epoch {ev.stop_epoch}."
        )
    if verdict == Verdict.UNDERFITTING:
        return (
            "The model does not fit even its training data: its training loss ended at "
            f"{fit.tail / train[0]:.0%} of its first value and close to the validation loss "
            f"({train[-1]:.4g} vs {valid[-1]:.4g}"
            f"{', still improving' if ev.still_improving else ''}): train longer, use a larger "
            "model or less regularization."
        )
    confident = (
        f" The validation loss rose since epoch {ev.signals['valid_loss']['best_epoch']} while "
        f"{ev.criterion} kept improving: the model grows over-confident, which the metric does "
        "not punish."
        if ev.overconfident
        else ""
    )
    return (
        f"{ev.criterion} is at or near its best ({ev.best_value:.4g} at epoch {ev.best_epoch})"
        f"{' and still improving' if ev.still_improving else ''}; no sign of overfitting."
        f"{confident}"
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
            last_epoch=curves.epochs[-1] if n else None,
            generalization_gap=curves.valid_loss[-1] - curves.train_loss[-1] if n else None,
        ),
    )
