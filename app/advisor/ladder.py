"""The guidance ladder: which remedy to try next for an overfitting model, and why.

Remedies are tried in a fixed order (more data, augmentation, Mixup, batch norm, dropout in the
head, dropout and weight decay throughout, and only last a smaller model). Each rung knows three
things about a run's facts: whether it cannot apply at all (``blocked``), which of its intensity
levels the run already has (``level``), and the recipe change for a given level (``option``). The
walk adds the rules that are the same for every rung: refuted rungs are skipped, rungs already in
the recipe or applied in the lineage are skipped unless a verification confirmed they help, in
which case the next level is offered; an inconclusive verification skips nothing (the step says
so).

Evidence from similar runs (:mod:`app.advisor.evidence`) only reorders, and only with cause: a rung
refuted on most similar runs (at least three verdicts, none confirmed) is tried after the next
open rung, listed right after it as ``demoted`` with the reason. It never skips a rung and never
moves one up.

Changes are keyed by recipe field paths (``head.ps``, ``mixup``, ``arch``…) so the model builder
can apply them as they are.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from app.advisor.architectures import ARCHS, sibling, smaller_sibling
from app.advisor.diagnosis import Diagnosis, Verdict
from app.advisor.evidence import Evidence, RungEvidence, demoted


class RungId(StrEnum):
    MORE_DATA = "more_data"
    AUGMENT = "augment"
    MIXUP = "mixup"
    BATCHNORM = "batchnorm"
    DROPOUT_HEAD = "dropout_head"
    DROPOUT_BODY = "dropout_body"
    SMALLER_MODEL = "smaller_model"


@dataclass(frozen=True, slots=True)
class Facts:
    """What a report says about the model and data; None means the report did not say."""

    task: str = "classification"
    arch: str | None = None
    batchnorm: bool | None = None
    head_dropout: float | None = None
    body_dropout: float | None = None
    weight_decay: float | None = None
    lr: float | None = None
    augment: str | None = None
    mixup_kind: str | None = None
    mixup_alpha: float | None = None
    more_data_available: bool | None = None
    data_fraction: float | None = None
    time_limited: bool = False
    memory_limited: bool = False


@dataclass(frozen=True, slots=True)
class History:
    """What the run's lineage already tried: rungs applied by ancestors, and each rung's latest
    verification verdict (confirmed, refuted or inconclusive)."""

    applied: frozenset[str] = frozenset()
    confirmed: frozenset[str] = frozenset()
    refuted: frozenset[str] = frozenset()
    inconclusive: frozenset[str] = frozenset()


class Option(NamedTuple):
    rung: str
    level: int
    action: str
    change: dict[str, Any]
    rationale: str


class Skip(NamedTuple):
    rung: str
    reason: str


class Step(NamedTuple):
    """One rung as seen from one run: recommended, alternative, skipped (with why), demoted (with
    why) or open; with the record of its verifications on similar runs, when there is one."""

    rung: str
    status: str
    reason: str
    evidence: RungEvidence | None = None


@dataclass(frozen=True, slots=True)
class Recommendation:
    rung: str | None
    level: int | None
    action: str
    change: dict[str, Any]
    rationale: str
    skipped: list[Skip] = field(default_factory=list)
    alternatives: list[Option] = field(default_factory=list)
    ladder: list[Step] = field(default_factory=list)
    evidence: RungEvidence | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, without the cost of ``dataclasses.asdict``'s deep copies."""
        return {
            "rung": self.rung,
            "level": self.level,
            "action": self.action,
            "change": self.change,
            "rationale": self.rationale,
            "skipped": [{"rung": s.rung, "reason": s.reason} for s in self.skipped],
            "alternatives": [
                {
                    "rung": o.rung,
                    "level": o.level,
                    "action": o.action,
                    "change": o.change,
                    "rationale": o.rationale,
                }
                for o in self.alternatives
            ],
            "ladder": [
                {
                    "rung": s.rung,
                    "status": s.status,
                    "reason": s.reason,
                    "evidence": None if s.evidence is None else s.evidence.to_dict(),
                }
                for s in self.ladder
            ],
            "evidence": None if self.evidence is None else self.evidence.to_dict(),
        }


Change = tuple[str, dict[str, Any], str]  # action, recipe change, rationale


@dataclass(frozen=True, slots=True)
class Rung:
    id: RungId
    title: str
    remedy: str
    changes: str
    levels: tuple[str, ...]
    blocked: Callable[[Facts], str | None]
    level: Callable[[Facts], int]
    option: Callable[[Facts, int], Change]


def _level_of(value: float | None, steps: tuple[float, ...]) -> int:
    """Index of the highest step ``value`` reaches; -1 when absent (None or 0)."""
    if not value:
        return -1
    reached = [i for i, s in enumerate(steps) if value >= s]
    return reached[-1] if reached else 0


# --- more data ---------------------------------------------------------------------------------


def _more_data_blocked(f: Facts) -> str | None:
    if f.more_data_available is False and (f.data_fraction is None or f.data_fraction >= 1.0):
        return "the report says no more data is available and all of it is already used"
    return None


def _more_data_option(f: Facts, level: int) -> Change:
    if f.data_fraction is not None and f.data_fraction < 1.0:
        return (
            f"Train on all the data you have: data_fraction {f.data_fraction:g} -> 1.0.",
            {"data_fraction": 1.0},
            f"Only {f.data_fraction:.0%} of the available training data was used; more data is "
            "the most reliable remedy for overfitting and costs no model change.",
        )
    said = "you have more data available" if f.more_data_available else "you can get more data"
    return (
        "Add more labelled data (more examples, more label kinds, or data already on disk).",
        {},
        f"If {said}, more data is the most reliable remedy for overfitting and changes nothing "
        "else. If you cannot, report more_data_available=false and the ladder moves on.",
    )


# --- augmentation ------------------------------------------------------------------------------

_AUGMENT_LEVELS = ("basic", "strong")


def _augment_option(f: Facts, level: int) -> Change:
    kind = _AUGMENT_LEVELS[level]
    what = (
        "random resized crop, horizontal flip, small rotation"
        if kind == "basic"
        else "basic augmentation plus colour jitter and random erasing"
    )
    return (
        f"Use {kind} data augmentation ({what}).",
        {"augment": kind},
        "Augmentation shows the model new variants of each image every epoch, so it cannot "
        "memorise the training set as easily; it needs no new labels.",
    )


# --- mixup -------------------------------------------------------------------------------------

_MIXUP_ALPHAS = (0.2, 0.4)


def _mixup_blocked(f: Facts) -> str | None:
    if f.task == "segmentation":
        return "Mixup/CutMix mix class labels and do not apply to segmentation masks"
    return None


def _mixup_option(f: Facts, level: int) -> Change:
    alpha = _MIXUP_ALPHAS[level]
    kind = f.mixup_kind or "mixup"
    return (
        f"Train with {kind} (alpha {alpha}).",
        {"mixup": {"kind": kind, "alpha": alpha}},
        "Mixup blends pairs of images and their labels, a regularizer that works on nearly any "
        "data and needs no domain knowledge.",
    )


# --- batch norm --------------------------------------------------------------------------------


def _batchnorm_blocked(f: Facts) -> str | None:
    if f.batchnorm:
        return "the model already uses batch normalization"
    meta = ARCHS.get(f.arch or "")
    if f.batchnorm is None and meta is not None:
        if meta.norm == "batch":
            return f"{meta.name} already uses batch normalization"
        if meta.norm == "layer":
            return f"{meta.name} normalizes with layer norm throughout"
    return None


def _batchnorm_option(f: Facts, level: int) -> Change:
    change: dict[str, Any] = {"batchnorm": True}
    meta = ARCHS.get(f.arch or "")
    body = ""
    if meta is not None and meta.bn_variant:
        change["arch"] = meta.bn_variant
        body = f" and switch the body to {meta.bn_variant}"
    return (
        f"Add batch normalization to the head{body}.",
        change,
        "Batch normalization makes the network easier to train and generalize better, and "
        "lets the later regularizers work at milder settings.",
    )


# --- dropout in the head -----------------------------------------------------------------------

_HEAD_PS = (0.25, 0.5)


def _dropout_head_blocked(f: Facts) -> str | None:
    if f.task == "segmentation":
        return "a segmentation model's decoder has no classifier head to drop out in"
    return None


def _dropout_head_option(f: Facts, level: int) -> Change:
    ps = _HEAD_PS[level]
    return (
        f"Add dropout p={ps} to the last layers (head).",
        {"head.ps": ps},
        "Dropout in the last layer or two is the cheapest architectural regularizer and "
        "leaves the pretrained body untouched.",
    )


# --- dropout throughout and weight decay -------------------------------------------------------

_BODY_DROPOUT = ((0.1, 0.05), (0.2, 0.1))  # (body dropout, weight decay) per level


def _dropout_body_option(f: Facts, level: int) -> Change:
    p, wd = _BODY_DROPOUT[level]
    wd = max(wd, f.weight_decay or 0.0)
    meta = ARCHS.get(f.arch or "")
    kind = (
        "stochastic depth on the residual blocks"
        if meta is not None and meta.body_dropout == "stochastic_depth"
        else "Dropout2d between stages"
    )
    return (
        f"Add dropout throughout the body ({kind}, p={p}) and weight decay {wd:g}.",
        {"body_dropout": p, "weight_decay": wd},
        "With the head regularized, dropout of another kind throughout the model and weight "
        "decay constrain the whole network, not just its last layers.",
    )


# --- smaller model -----------------------------------------------------------------------------


def _smaller_blocked(f: Facts) -> str | None:
    if f.arch in ARCHS and smaller_sibling(f.arch) is None:
        return f"{f.arch} is already the smallest of its family"
    return None


def _smaller_option(f: Facts, level: int) -> Change:
    smaller = smaller_sibling(f.arch) if f.arch in ARCHS else None
    if smaller is None:
        name = f.arch or "the architecture"
        return (
            f"Use a smaller version of {name}.",
            {},
            "A smaller model has less capacity to memorise; it is the last resort because it "
            "usually costs accuracy as well.",
        )
    return (
        f"Use the smaller {smaller} instead of {f.arch}.",
        {"arch": smaller},
        "A smaller model has less capacity to memorise; it comes last because it usually "
        "costs accuracy as well, but it trains faster and needs less memory.",
    )


def _never(f: Facts) -> str | None:
    return None


RUNGS: tuple[Rung, ...] = (
    Rung(
        RungId.MORE_DATA,
        "More data",
        "Get more data: more labels, more tasks or label kinds, or the data already on disk.",
        "data_fraction -> 1.0; otherwise collect more",
        ("all available data",),
        _more_data_blocked,
        lambda f: -1,
        _more_data_option,
    ),
    Rung(
        RungId.AUGMENT,
        "Data augmentation",
        "Random transformations of the training images every epoch.",
        "augment: none -> basic -> strong",
        _AUGMENT_LEVELS,
        _never,
        lambda f: _AUGMENT_LEVELS.index(f.augment) if f.augment in _AUGMENT_LEVELS else -1,
        _augment_option,
    ),
    Rung(
        RungId.MIXUP,
        "Mixup / CutMix",
        "Blend pairs of images and their labels; effective on nearly any data.",
        "mixup: {kind: mixup, alpha}, alpha 0.2 -> 0.4",
        tuple(f"alpha {a}" for a in _MIXUP_ALPHAS),
        _mixup_blocked,
        lambda f: _level_of(f.mixup_alpha, _MIXUP_ALPHAS) if f.mixup_kind else -1,
        _mixup_option,
    ),
    Rung(
        RungId.BATCHNORM,
        "Batch normalization",
        "A more generalizable architecture: batch normalization in the head and the body.",
        "batchnorm: true; the *_bn variant of the body where one exists",
        ("on",),
        _batchnorm_blocked,
        lambda f: -1,
        _batchnorm_option,
    ),
    Rung(
        RungId.DROPOUT_HEAD,
        "Dropout in the head",
        "Dropout in the last layer or two.",
        "head.ps: 0 -> 0.25 -> 0.5",
        tuple(f"p={p}" for p in _HEAD_PS),
        _dropout_head_blocked,
        lambda f: _level_of(f.head_dropout, _HEAD_PS),
        _dropout_head_option,
    ),
    Rung(
        RungId.DROPOUT_BODY,
        "Dropout throughout, weight decay",
        "Dropout of other kinds throughout the model (stochastic depth, Dropout2d) and "
        "weight decay.",
        "body_dropout 0 -> 0.1 -> 0.2, weight_decay -> 0.05 -> 0.1",
        tuple(f"p={p}, wd={wd}" for p, wd in _BODY_DROPOUT),
        _never,
        lambda f: _level_of(f.body_dropout, tuple(p for p, _ in _BODY_DROPOUT)),
        _dropout_body_option,
    ),
    Rung(
        RungId.SMALLER_MODEL,
        "Smaller model",
        "A smaller version of the architecture; last, because it usually costs accuracy.",
        "arch: the next smaller model of the family (resnet50 -> resnet34 -> resnet18, ...)",
        ("next smaller",),
        _smaller_blocked,
        lambda f: -1,
        _smaller_option,
    ),
)

RUNG_BY_ID: Mapping[str, Rung] = {r.id.value: r for r in RUNGS}


def next_step(rung: Rung, facts: Facts, level: int | None = None) -> Option | Skip:
    """What applying ``rung`` would change: at ``level``, by default the level above the one the
    facts already have; a Skip when it cannot change anything. The model builder applies rungs
    with this same function."""
    rid = rung.id.value
    reason = rung.blocked(facts)
    if reason:
        return Skip(rid, reason)
    current = rung.level(facts)
    level = current + 1 if level is None else level
    if level >= len(rung.levels):
        if current == len(rung.levels) - 1:
            return Skip(rid, f"already in the recipe at its strongest level ({rung.levels[-1]})")
        return Skip(rid, f"{rid} has no level {level}")
    if level <= current:
        return Skip(rid, f"already in the recipe at {rung.levels[current]}")
    action, change, why = rung.option(facts, level)
    return Option(rid, level, action, change, why)


def evaluate(rung: Rung, facts: Facts, history: History) -> Option | Skip:
    """Whether ``rung`` can be the next remedy for this run, and at which level: refuted rungs
    and rungs already in place are skipped, unless a verification confirmed they help."""
    rid = rung.id.value
    if rid in history.refuted:
        return Skip(rid, "a verification in this run's lineage found it does not help (refuted)")
    step = next_step(rung, facts)
    current = rung.level(facts)
    if isinstance(step, Skip) or (current < 0 and rid not in history.applied):
        return step
    if rid not in history.confirmed:
        if current >= 0:
            return Skip(rid, f"already in the recipe ({rung.levels[current]})")
        return Skip(rid, "already applied in this run's lineage")
    go_on = "Verified as helping in this lineage; the model still overfits, so go stronger."
    return step._replace(rationale=f"{go_on} {step.rationale}")


def recommend(
    diagnosis: Diagnosis,
    facts: Facts,
    history: History = History(),
    evidence: Evidence | None = None,
) -> Recommendation:
    """Walk the ladder for an overfitting run; answer honestly when there is nothing to remedy.
    ``evidence`` (per rung, the verdicts of similar runs) is carried along, and demotes a rung
    that similar runs mostly refuted below the next open rung."""
    if diagnosis.verdict != Verdict.OVERFITTING:
        return _no_remedy(diagnosis, facts)

    results = [evaluate(r, facts, history) for r in RUNGS]
    options = [r for r in results if isinstance(r, Option)]
    smaller = results[-1]
    first_smaller = (facts.time_limited or facts.memory_limited) and isinstance(smaller, Option)
    if isinstance(smaller, Option) and first_smaller:
        # The smaller model, then the first other rung as the one alternative.
        candidates = [smaller, *(o for o in options if o is not smaller)]
    else:
        # A smaller model is offered only once rungs 1-6 are exhausted, not even as an alternative.
        candidates = [o for o in options if o is not smaller] or options
    moves: dict[str, str] = {}
    if evidence:
        candidates, moves = _demote(candidates, evidence)
    chosen = candidates[0] if candidates else None
    alternatives = candidates[1:2]
    if first_smaller and chosen is not None and chosen is smaller:
        limits = " and ".join(
            w
            for w, on in (
                ("too slow", facts.time_limited),
                ("too memory-hungry", facts.memory_limited),
            )
            if on
        )
        chosen = chosen._replace(
            rationale=f"Offered first because the report says training is {limits}. "
            f"{chosen.rationale}"
        )

    normal_first = next((i for i, r in enumerate(results) if isinstance(r, Option)), len(results))
    skipped = [r for r in results[:normal_first] if isinstance(r, Skip)]
    steps = _steps(results, chosen, alternatives, history, evidence, moves)
    if chosen is None:
        return Recommendation(
            rung=None,
            level=None,
            action=(
                f"Every rung of the ladder is applied or ruled out. Stop training at the best "
                f"epoch ({diagnosis.stop_epoch}) and keep that checkpoint."
            ),
            change={},
            rationale=diagnosis.summary,
            skipped=skipped,
            ladder=steps,
        )
    rationale = f"{diagnosis.summary} {chosen.rationale}"
    if evidence:
        for rung, below in moves.items():
            if below == chosen.rung:
                rationale += f" It comes before {rung}, {demoted(evidence[rung])}."
    if chosen.rung in history.inconclusive:
        rationale += " A verification in this lineage was inconclusive, so it stays on the ladder."
    return Recommendation(
        rung=chosen.rung,
        level=chosen.level,
        action=chosen.action,
        change=chosen.change,
        rationale=rationale,
        skipped=skipped,
        alternatives=alternatives,
        ladder=steps,
        evidence=evidence.get(chosen.rung) if evidence else None,
    )


def _demote(candidates: list[Option], evidence: Evidence) -> tuple[list[Option], dict[str, str]]:
    """The candidates with each demoted one moved right below the first candidate after it that
    is not demoted (demoted ones keep their ladder order among themselves), and for each moved
    rung the rung it now comes after. A demoted rung with nothing better after it stays put."""
    order: list[Option] = []
    waiting: list[Option] = []
    moves: dict[str, str] = {}
    for option in candidates:
        if demoted(evidence.get(option.rung)):
            waiting.append(option)
            continue
        order.append(option)
        for w in waiting:
            moves[w.rung] = option.rung
        order.extend(waiting)
        waiting = []
    return order + waiting, moves


def _steps(
    results: list[Option | Skip],
    chosen: Option | None,
    alternatives: list[Option],
    history: History,
    evidence: Evidence | None,
    moves: Mapping[str, str],
) -> list[Step]:
    steps = []
    for r in results:
        if isinstance(r, Skip):
            steps.append(Step(r.rung, "skipped", r.reason))
            continue
        if r.rung in moves:
            why = demoted(evidence.get(r.rung) if evidence else None)
            status, reason = "demoted", f"Tried after {moves[r.rung]}: {why}. {r.action}"
        elif chosen is not None and r.rung == chosen.rung:
            status, reason = "recommended", chosen.action
        elif any(a.rung == r.rung for a in alternatives):
            status, reason = "alternative", r.action
        else:
            status, reason = "open", r.action
        if r.rung in history.inconclusive:
            reason += " (A verification in this lineage was inconclusive; it stays on the ladder.)"
        steps.append(Step(r.rung, status, reason))
    if not evidence:
        return steps
    steps = [s._replace(evidence=evidence.get(s.rung)) for s in steps]
    if not moves:
        return steps
    # A demoted step goes right after the step it now comes after, when that is below it on the
    # ladder (a smaller model offered first under constraints is already last: it stays).
    position = {s.rung: i for i, s in enumerate(steps)}
    down = {rung: below for rung, below in moves.items() if position[below] > position[rung]}
    ordered: list[Step] = []
    for s in steps:
        if s.rung in down:
            continue
        ordered.append(s)
        ordered.extend(d for d in steps if down.get(d.rung) == s.rung)
    return ordered


def _no_remedy(diagnosis: Diagnosis, facts: Facts) -> Recommendation:
    change: dict[str, Any] = {}
    verdict = diagnosis.verdict
    if verdict == Verdict.HEALTHY:
        action = "No remedy needed: the model is not overfitting. Keep this recipe."
        if diagnosis.evidence.still_improving:
            action += " It is still improving, so more epochs may help."
    elif verdict == Verdict.UNDERFITTING:
        larger = sibling(facts.arch, +1) if facts.arch in ARCHS else None
        action = "Train longer, use a larger model"
        if larger:
            action += f" ({larger})"
            change = {"arch": larger}
        action += ", or use less regularization."
    elif verdict == Verdict.DIVERGING:
        action = "Lower the learning rate (about 10x) and check the data for bad values."
        if facts.lr:
            change = {"lr": facts.lr / 10}
    elif verdict == Verdict.NO_SIGNAL:
        # No rung helps a model that cannot learn the task from this data: fix the data first.
        action = (
            "Check the data, not the model: look at a batch of inputs with their labels (shuffled "
            "or wrong labels?), check that training and validation data come from the same "
            "source, and look for a split or preprocessing bug (a transform applied to one side "
            "only, labels misaligned with inputs)."
        )
    else:
        action = "Report more epochs before judging."
    return Recommendation(
        rung=None, level=None, action=action, change=change, rationale=diagnosis.summary
    )
