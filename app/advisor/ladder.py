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

Each rung means what it should for the run's modality (image, text, tabular, audio, time series:
:mod:`app.advisor.modality`): the rungs read their keys, levels and words from the modality's row
of :mod:`app.advisor.modal_remedies` (text masks tokens where images are cropped, skips batch norm
for a transformer, and drops out hidden and attention units). The order is the same for all.

Changes are keyed by recipe field paths (``head.ps``, ``mixup``, ``arch``…) so the model builder
can apply them as they are; a modality the builder does not train speaks its own settings
(``token_mask``, ``hidden_dropout_prob``…). Skip reasons and actions quote the values the report
gave, never a level's nominal figure.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, NamedTuple

from app.advisor.architectures import ARCHS, sibling
from app.advisor.diagnosis import Diagnosis, Verdict
from app.advisor.evidence import Evidence, RungEvidence, demoted
from app.advisor.modal_remedies import REMEDIES, Augmentation, Remedies
from app.advisor.modality import (
    chain_of_family,
    family_of,
    in_chain,
    model_key,
    named_sibling,
    resolve,
)


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
    # image, text, tabular, audio or time_series; None: the architecture's name tells, else image.
    modality: str | None = None
    # The trainer's own architectures, large to small: the smaller model is the next of these.
    models: tuple[str, ...] = ()


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
    why) or open; with the record of its verifications on similar runs, when there is one, and
    the change it would make (None when skipped)."""

    rung: str
    status: str
    reason: str
    evidence: RungEvidence | None = None
    change: dict[str, Any] | None = None


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
                    "change": s.change,
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
    # The rung's setting as the report gave it, quoted when the rung is skipped for being in place.
    said: Callable[[Facts], str] = lambda f: "as reported"


def _level_of(value: float | None, steps: tuple[float, ...]) -> int:
    """Index of the highest of the ascending ``steps`` that ``value`` reaches; -1 when it reaches
    none (None, 0, or below the first step: head dropout 0.01 is not the 0.25 level, and the first
    step is offered as an increase)."""
    if value is None:
        return -1
    return sum(value >= s for s in steps) - 1


def _remedies(f: Facts) -> Remedies:
    """The modality's row of the rungs' keys, levels and words."""
    return REMEDIES[resolve(f.modality, f.arch)]


def _move(what: str, current: float | None, new: float, where: str = "", unit: str = "") -> str:
    """A setting going to ``new``, worded from what the report says it is: "use" when it said
    nothing, "add" from 0, "raise" from less, "keep" what already reaches ``new``."""
    tail = f" {where}" if where else ""
    if current is None:
        return f"use {what} {unit}{new:g}{tail}"
    if not current:
        return f"add {what} {unit}{new:g}{tail}"
    if current < new:
        return f"raise {what} from {unit}{current:g} to {unit}{new:g}{tail}"
    return f"keep {what} at {unit}{current:g}{tail}"


def _sentence(text: str) -> str:
    return f"{text[0].upper()}{text[1:]}."


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

# What the report says of its augmentation, whatever the modality's transforms are.
AUGMENT_LEVELS = ("basic", "strong")


def _augmentation(f: Facts) -> Augmentation:
    found = _remedies(f).augment
    if found is None:  # the modality's skip answers before any level is asked for
        raise LookupError(f"{f.modality} data has no augmentation rung")
    return found


def _augment_option(f: Facts, level: int) -> Change:
    row = _augmentation(f)
    return row.actions[level], {row.key: row.values[level]}, row.why


# --- mixup -------------------------------------------------------------------------------------

_MIXUP_ALPHAS = (0.2, 0.4)


def _mixup_blocked(f: Facts) -> str | None:
    if f.task == "segmentation":
        return "Mixup/CutMix mix class labels and do not apply to segmentation masks"
    return None


def _mixup_option(f: Facts, level: int) -> Change:
    alpha = _MIXUP_ALPHAS[level]
    kind = f.mixup_kind or "mixup"
    reported = f.mixup_alpha if f.mixup_kind and f.mixup_alpha else None
    said = f"{reported:g} -> {alpha:g}" if reported is not None else f"{alpha:g}"
    return (
        f"Train with {kind} (alpha {said}).",
        {"mixup": {"kind": kind, "alpha": alpha}},
        f"Mixup blends pairs of {_remedies(f).noun} and their labels, a regularizer that works "
        "on nearly any data and needs no domain knowledge.",
    )


# --- batch norm --------------------------------------------------------------------------------


def _batchnorm_blocked(f: Facts) -> str | None:
    if f.batchnorm:
        return "the model already uses batch normalization"
    meta = ARCHS.get(f.arch or "")
    if meta is not None:
        if f.batchnorm is None and meta.norm == "batch":
            return f"{meta.name} already uses batch normalization"
        if f.batchnorm is None and meta.norm == "layer":
            return f"{meta.name} already normalizes with layer norm throughout"
        return None
    # A model outside the builder's table: a transformer's "no batch norm" agrees with its layer
    # norm (the builder can put batch norm in its own head; a user's transformer has none to add).
    family = family_of(f.arch)
    if family is not None and family.norm == "layer":
        return f"{f.arch} already normalizes with layer norm throughout"
    if family is not None and family.norm == "batch" and f.batchnorm is None:
        return f"{f.arch} already uses batch normalization"
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


def _dropout_head_blocked(f: Facts) -> str | None:
    if f.task == "segmentation":
        return "a segmentation model's decoder has no classifier head to drop out in"
    return None


def _dropout_head_level(f: Facts) -> int:
    return _level_of(f.head_dropout, _remedies(f).head.ps)


def _dropout_head_option(f: Facts, level: int) -> Change:
    head = _remedies(f).head
    ps = head.ps[level]
    action = _move("dropout", f.head_dropout, ps, head.name, "p=")
    return _sentence(action), {head.key: ps}, head.why


def _dropout_head_said(f: Facts) -> str:
    return f"p={f.head_dropout:g}" if f.head_dropout is not None else "not reported"


# --- dropout throughout and weight decay -------------------------------------------------------


def _dropout_body_level(f: Facts) -> int:
    # Read from the dropout: a recipe keeps its weight decay whatever its dropout, so weight decay
    # below the level's is quoted (wd=0), not counted against the level.
    return _level_of(f.body_dropout, tuple(p for p, _ in _remedies(f).body.levels))


def _dropout_body_option(f: Facts, level: int) -> Change:
    body = _remedies(f).body
    p, wd = body.levels[level]
    # Never weaken what the report has: a level raises each setting to at least its figure.
    p, wd = max(p, f.body_dropout or 0.0), max(wd, f.weight_decay or 0.0)
    kind = body.kind(f.arch)
    dropout = _move("dropout", f.body_dropout, p, f"throughout the body ({kind})", "p=")
    decay = _move("weight decay", f.weight_decay, wd)
    return (
        _sentence(f"{dropout}, and {decay}"),
        {**dict.fromkeys(body.keys, p), "weight_decay": wd},
        body.why,
    )


def _dropout_body_said(f: Facts) -> str:
    p = f"p={f.body_dropout:g}" if f.body_dropout is not None else "dropout not reported"
    wd = f"wd={f.weight_decay:g}" if f.weight_decay is not None else "weight decay not reported"
    return f"{p}, {wd}"


# --- smaller model -----------------------------------------------------------------------------


def _position(f: Facts) -> int | None:
    """Where the report's arch is among the trainer's own models (names compared as model_key
    compares them)."""
    names = [model_key(m) for m in f.models]
    key = model_key(f.arch) if f.arch else None
    return names.index(key) if key in names else None


def _sized(f: Facts, step: int) -> str | None:
    """The model ``step`` sizes away (-1: smaller): along the trainer's own list when it gave one
    (large to small), else the builder's table, else the named models' chains."""
    if f.models:
        at = _position(f)
        # The list runs large to small: a smaller model is further down it.
        i = None if at is None else at - step
        return f.models[i] if i is not None and 0 <= i < len(f.models) else None
    if f.arch in ARCHS:
        return sibling(f.arch, step)
    return named_sibling(f.arch, step)


def _smaller_blocked(f: Facts) -> str | None:
    if f.models:
        listed = ", ".join(f.models)
        if f.arch is None:
            return f"the report does not say which of your models ({listed}) this run trained"
        if _position(f) is None:
            return f"{f.arch} is not one of your models ({listed}), so none is known to be smaller"
        if _sized(f, -1) is None:
            return f"{f.arch} is already the last (smallest) of your models ({listed})"
        return None
    if (f.arch in ARCHS or in_chain(f.arch)) and _sized(f, -1) is None:
        return f"{f.arch} is already the smallest of its family"
    return None


def _smaller_option(f: Facts, level: int) -> Change:
    smaller = _sized(f, -1)
    remedies = _remedies(f)
    if smaller is None:
        name = f.arch or "the architecture"
        action = remedies.smaller.format(arch=name)
        family = chain_of_family(f.arch)  # "bert", as Hugging Face's model_type names it
        if family:
            action += f" Its family, smallest first: {', '.join(family)}."
        action += " To verify it, list your models, large to small, in the smaller_model knob."
        return action, {}, remedies.smaller_why
    return (
        f"Use the smaller {smaller} instead of {f.arch}.",
        {"arch": smaller},
        remedies.smaller_why,
    )


def _never(f: Facts) -> str | None:
    return None


# The listing's levels are the image model's, the builder's vocabulary; every modality has as many.
IMAGE_HEAD, IMAGE_BODY = REMEDIES["image"].head, REMEDIES["image"].body

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
        AUGMENT_LEVELS,
        _never,
        lambda f: AUGMENT_LEVELS.index(f.augment) if f.augment in AUGMENT_LEVELS else -1,
        _augment_option,
        lambda f: str(f.augment),
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
        lambda f: f"alpha {f.mixup_alpha:g}" if f.mixup_alpha is not None else "alpha not reported",
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
        tuple(f"p={p}" for p in IMAGE_HEAD.ps),
        _dropout_head_blocked,
        _dropout_head_level,
        _dropout_head_option,
        _dropout_head_said,
    ),
    Rung(
        RungId.DROPOUT_BODY,
        "Dropout throughout, weight decay",
        "Dropout of other kinds throughout the model (stochastic depth, Dropout2d) and "
        "weight decay.",
        "body_dropout 0 -> 0.1 -> 0.2, weight_decay -> 0.05 -> 0.1",
        tuple(f"p={p}, wd={wd}" for p, wd in IMAGE_BODY.levels),
        _never,
        _dropout_body_level,
        _dropout_body_option,
        _dropout_body_said,
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
    # The architecture's reason first (bert already has layer norm), then the modality's.
    reason = rung.blocked(facts) or _remedies(facts).skips.get(rid)
    if reason:
        return Skip(rid, reason)
    current = rung.level(facts)
    level = current + 1 if level is None else level
    if level >= len(rung.levels):
        if current == len(rung.levels) - 1:
            return Skip(rid, f"already in the recipe at its strongest level ({rung.said(facts)})")
        return Skip(rid, f"{rid} has no level {level}")
    if level <= current:
        return Skip(rid, f"already in the recipe at {rung.said(facts)}")
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
            return Skip(rid, f"already in the recipe ({rung.said(facts)})")
        return Skip(rid, "already applied in this run's lineage")
    go_on = "Verified as helping in this lineage; the model still overfits, so go stronger."
    return step._replace(rationale=f"{go_on} {step.rationale}")


@lru_cache(maxsize=1024)
def _walk(facts: Facts, history: History) -> tuple[Option | Skip, ...]:
    """Every rung evaluated for a run: the same for each look at a run while its recipe and
    lineage stay as they are, so a run reported evaluation by evaluation walks it once."""
    return tuple(evaluate(r, facts, history) for r in RUNGS)


def forget_walks() -> None:
    """Drop the remembered ladder walks (for measuring a recipe seen for the first time)."""
    _walk.cache_clear()


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

    results = _walk(facts, history)
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
    results: Sequence[Option | Skip],
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
        steps.append(Step(r.rung, status, reason, change=r.change))
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
        larger = _sized(facts, +1)
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
