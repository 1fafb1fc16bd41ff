"""The verification protocol as decisions on what is known: given the trials a verification has
(finished, stopped at a checkpoint, or still running with the epochs seen so far), which trials
must exist next, which race lanes to stop, and, once nothing more is needed, the result.

Pure, like the rest of ``app.advisor``: the service stores trials and calls :func:`step` after
every change; any worker trains what it asks for. Decisions read trials in seed order, never in
the order they happened to finish, so a verification reaches the same verdict however many
workers train it, and the same as when one worker trained its seeds one after another.

- One rung, adaptive seeds: ``min_seeds`` pairs are wanted at once; after pair k (in seed order)
  :func:`verdicts.next_seed` says whether pair k + 1 is needed, up to ``max_seeds``. Pairs trained
  beyond the decision are kept for reuse, not counted.
- A race: every seed's baseline and every lane (a candidate with a seed) at once. At each
  checkpoint (a quarter, then half of the epochs), once every live lane reached it, those that
  trail the leader by a clear margin (:func:`verdicts.trailing`) are stopped; the rest finish and
  are judged against the shared baseline, then ranked.
- More data with nothing more on disk: the baseline on fractions of its training set, every seed
  and fraction at once, and a learning curve predicts what twice the data would bring.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean, stdev
from typing import Any, Literal

from app.advisor.verdicts import Comparison, Criterion, Paired, judge, next_seed, trailing

Kind = Literal["adaptive", "race", "learning_curve"]
FRACTIONS = (0.25, 0.5, 1.0)
# Racing checkpoints, as shares of the epochs (successive halving of the budget).
CHECKPOINTS = (0.25, 0.5)
BASELINE, CANDIDATE, PRUNED, FRACTION = "baseline", "candidate", "pruned", "fraction"


def checkpoints(total: int) -> list[int]:
    return sorted({c for c in (max(1, round(total * f)) for f in CHECKPOINTS) if c < total})


def metric_value(record: Mapping[str, Any], metric: str) -> float:
    """One epoch record's value of ``metric``; ``valid_loss`` is a metric too (for a script's
    run that reported no other)."""
    if metric == "valid_loss":
        return float(record["valid_loss"])
    return float(record["metrics"][metric])


def trial_figures(
    curve: Sequence[Mapping[str, Any]], metric: str, higher_is_better: bool = True
) -> dict[str, Any]:
    """What a verification compares of one training, from its curve (epoch records as a run
    report has them): the best and final ``metric``, where the best was, the losses. A metric
    where lower is better says so (``higher_is_better: false``), and comparisons turn it round."""
    values = [metric_value(e, metric) for e in curve]
    sign = 1.0 if higher_is_better else -1.0
    best = max(range(len(values)), key=lambda i: sign * values[i])
    last = curve[-1]
    figures = {
        "metric": metric,
        "final_metric": values[-1],
        "best_metric": values[best],
        "best_epoch": curve[best]["epoch"],
        "degradation": sign * (values[best] - values[-1]) / max(abs(values[best]), 1e-12),
        "final_valid_loss": last["valid_loss"],
        "best_valid_loss": min(e["valid_loss"] for e in curve),
        "gap": None if last.get("train_loss") is None else last["valid_loss"] - last["train_loss"],
    }
    if not higher_is_better:
        figures["higher_is_better"] = False
    return figures


@dataclass(frozen=True, slots=True, order=True)
class TrialKey:
    """Which training a verification needs: a role, a seed, the candidate's rung, and the share
    of the training set (a learning curve's fractions; 1 otherwise)."""

    role: str  # baseline, candidate or fraction
    seed: int
    rung: str = ""
    fraction: float = 1.0

    @property
    def label(self) -> str:
        if self.role == FRACTION:
            return f"fraction {self.fraction:g}"
        return f"{self.role} {self.rung}".strip()


@dataclass(frozen=True, slots=True)
class Known:
    """What is known of one needed training: its figures once it finished (or stopped at a
    checkpoint, ``stopped_at``), and the primary metric of every epoch seen so far (negated
    where lower is better: higher is better here)."""

    metrics: tuple[float, ...] = ()
    figures: Mapping[str, Any] | None = None
    stopped_at: int | None = None

    @property
    def finished(self) -> bool:
        return self.figures is not None and self.stopped_at is None


@dataclass(frozen=True, slots=True)
class Spec:
    kind: Kind
    seeds: tuple[int, ...]
    min_seeds: int
    max_seeds: int
    criterion: Criterion
    smallest_effect: float
    epochs: int
    rungs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cut:
    """A race lane stopped at a checkpoint."""

    epoch: int
    reason: str
    score: float


@dataclass(frozen=True)
class Step:
    """The protocol's answer: the trainings that must exist (queued unless known), the race
    rungs stopped (their lanes' unfinished trainings stop at the checkpoint), and the result
    once nothing more is needed (None until then)."""

    wanted: tuple[TrialKey, ...]
    cuts: Mapping[str, Cut] = field(default_factory=dict)
    result: dict[str, Any] | None = None


def step(spec: Spec, known: Mapping[TrialKey, Known]) -> Step:
    if spec.kind == "learning_curve":
        return _learning_curve(spec, known)
    if spec.kind == "race":
        return _race(spec, known)
    return _adaptive(spec, known)


def _finished(known: Mapping[TrialKey, Known], key: TrialKey) -> Mapping[str, Any] | None:
    got = known.get(key)
    return got.figures if got is not None and got.finished else None


def _paired(seed: int, base: Mapping[str, Any], cand: Mapping[str, Any]) -> Paired:
    # Turned round where lower is better, so that a positive effect is always an improvement.
    sign = 1.0 if base.get("higher_is_better", True) else -1.0
    return Paired(
        seed,
        sign * base["best_metric"],
        sign * base["final_metric"],
        sign * cand["best_metric"],
        sign * cand["final_metric"],
    )


def judged(comparisons: Mapping[Criterion, Comparison], criterion: Criterion) -> dict[str, Any]:
    """The verdict fields of the criterion the request named, and both comparisons."""
    chosen = comparisons[criterion]
    return {
        "verdict": chosen.verdict,
        "effect": chosen.effect,
        "interval": list(chosen.interval) if chosen.interval else None,
        "differences": list(chosen.differences),
        "reason": chosen.reason,
        "comparisons": {k: v.to_dict() for k, v in comparisons.items()},
    }


def per_seed(key: TrialKey, figures: Mapping[str, Any], role: str | None = None) -> dict[str, Any]:
    """One trial's line in the result; the service adds whether it was reused."""
    named = key.label if key.role == FRACTION else key.role
    line: dict[str, Any] = {"seed": key.seed, "role": role or named}
    if key.rung:
        line["rung"] = key.rung
    return {**line, **figures}


# --- one rung, adaptive seeds ------------------------------------------------------------------


def _adaptive(spec: Spec, known: Mapping[TrialKey, Known]) -> Step:
    (rung,) = spec.rungs
    seeds = spec.seeds[: spec.max_seeds]
    opened = min(spec.min_seeds, len(seeds))
    pairs: list[Paired] = []
    lines: list[dict[str, Any]] = []
    stop: str | None = None
    why = ""
    for seed in seeds:
        base_key, cand_key = TrialKey(BASELINE, seed), TrialKey(CANDIDATE, seed, rung)
        base, cand = _finished(known, base_key), _finished(known, cand_key)
        if base is None or cand is None:
            return Step(_pairs(seeds[:opened], rung))
        pairs.append(_paired(seed, base, cand))
        lines += [per_seed(base_key, base), per_seed(cand_key, cand)]
        diffs = judge(pairs, spec.criterion, spec.smallest_effect)[spec.criterion].differences
        go, stop, why = next_seed(diffs, spec.min_seeds, spec.max_seeds, spec.smallest_effect)
        if not go:
            break
        opened = max(opened, len(pairs) + 1)
    # Settled, futile, or out of seeds (a list shorter than max_seeds).
    found = judged(judge(pairs, spec.criterion, spec.smallest_effect), spec.criterion)
    result = {
        **found,
        "per_seed": lines,
        "seeds_used": len(pairs),
        "stopped": stop or "max_seeds",
        "stopped_reason": why,
        "rungs": [{"rung": rung, **found}],
    }
    return Step(_pairs(seeds[: len(pairs)], rung), result=result)


def _pairs(seeds: Sequence[int], rung: str) -> tuple[TrialKey, ...]:
    return tuple(k for s in seeds for k in (TrialKey(BASELINE, s), TrialKey(CANDIDATE, s, rung)))


# --- a race ------------------------------------------------------------------------------------


def _cuts(spec: Spec, known: Mapping[TrialKey, Known]) -> dict[str, Cut]:
    """The rungs stopped so far: checkpoint by checkpoint, once every live lane reached it."""
    alive = list(spec.rungs)
    cuts: dict[str, Cut] = {}
    for stop in checkpoints(spec.epochs):
        lanes = {
            rung: [known.get(TrialKey(CANDIDATE, s, rung), Known()) for s in spec.seeds]
            for rung in alive
        }
        if any(len(lane.metrics) < stop for lane_list in lanes.values() for lane in lane_list):
            break
        scores = {
            rung: [max(lane.metrics[:stop]) for lane in lane_list]
            for rung, lane_list in lanes.items()
        }
        for rung, why in trailing(scores, spec.smallest_effect).items():
            cuts[rung] = Cut(stop, f"stopped at epoch {stop}: {why}", fmean(scores[rung]))
            alive.remove(rung)
    return cuts


def _race(spec: Spec, known: Mapping[TrialKey, Known]) -> Step:
    cuts = _cuts(spec, known)
    alive = [rung for rung in spec.rungs if rung not in cuts]
    wanted = tuple(TrialKey(BASELINE, s) for s in spec.seeds) + tuple(
        TrialKey(CANDIDATE, s, rung) for rung in alive for s in spec.seeds
    )
    cut_lanes = [TrialKey(CANDIDATE, s, rung) for rung in cuts for s in spec.seeds]
    if any(_finished(known, k) is None for k in wanted) or any(
        known.get(k, Known()).figures is None for k in cut_lanes
    ):
        return Step(wanted, cuts)
    baselines = {s: _finished(known, TrialKey(BASELINE, s)) or {} for s in spec.seeds}
    lines = [per_seed(TrialKey(BASELINE, s), f) for s, f in baselines.items()]
    results: dict[str, dict[str, Any]] = {}
    for rung in alive:
        keys = [TrialKey(CANDIDATE, s, rung) for s in spec.seeds]
        rows = [(k.seed, _finished(known, k) or {}) for k in keys]
        pairs = [_paired(seed, baselines[seed], row) for seed, row in rows]
        results[rung] = judged(judge(pairs, spec.criterion, spec.smallest_effect), spec.criterion)
        lines += [per_seed(k, row) for k, (_, row) in zip(keys, rows, strict=True)]
    for rung in cuts:
        lines += [
            per_seed(k, known[k].figures or {}, PRUNED)
            for k in (TrialKey(CANDIDATE, s, rung) for s in spec.seeds)
        ]
    ranking = sorted(alive, key=lambda r: results[r]["effect"], reverse=True)
    ranking += sorted(cuts, key=lambda r: (-cuts[r].epoch, -cuts[r].score))
    rungs: list[dict[str, Any]] = []
    for rank, rung in enumerate(ranking, 1):
        if rung in results:
            rungs.append({"rung": rung, "rank": rank, **results[rung]})
        else:
            cut = cuts[rung]
            rungs.append({
                "rung": rung, "rank": rank, "verdict": "inconclusive", "effect": None,
                "interval": None, "reason": cut.reason, "pruned_at": cut.epoch,
            })  # fmt: skip
    winner = rungs[0]
    result = {
        "verdict": winner["verdict"],
        "effect": winner["effect"],
        "interval": winner["interval"],
        "reason": f"{winner['rung']} ranks first: {winner['reason']}",
        "per_seed": lines,
        "seeds_used": len(spec.seeds),
        "stopped": "race",
        "stopped_reason": f"a race trains every seed it is given ({len(spec.seeds)})",
        "race": {
            "winner": winner["rung"],
            "checkpoints": checkpoints(spec.epochs),
            "ranking": ranking,
        },
        "rungs": rungs,
    }
    return Step(wanted, cuts, result)


# --- more data, as a learning curve ------------------------------------------------------------


def learning_curve_seeds(spec: Spec) -> tuple[int, ...]:
    return spec.seeds[: max(spec.min_seeds, min(3, len(spec.seeds)))]


def _learning_curve(spec: Spec, known: Mapping[TrialKey, Known]) -> Step:
    seeds = learning_curve_seeds(spec)
    wanted = tuple(TrialKey(FRACTION, s, fraction=f) for s in seeds for f in FRACTIONS)
    found = {k: _finished(known, k) for k in wanted}
    if any(f is None for f in found.values()):
        return Step(wanted)
    points: dict[float, list[float]] = {}
    for key, figures in found.items():
        assert figures is not None
        points.setdefault(key.fraction, []).append(figures[f"{spec.criterion}_metric"])
    # Only ratios of sizes enter the fit: a script that does not know its size counts in units.
    n_train = int((found[TrialKey(FRACTION, seeds[0], fraction=1.0)] or {}).get("n_train") or 1)
    verdict = learning_curve_verdict(points, n_train)
    result = {
        **verdict,
        "per_seed": [per_seed(k, f or {}) for k, f in found.items()],
        "seeds_used": len(seeds),
        "stopped": "max_seeds",
        "stopped_reason": f"a learning curve trains {len(seeds)} seeds of each fraction",
        "rungs": [
            {"rung": "more_data", "verdict": verdict["verdict"], "effect": verdict["effect"]}
        ],
    }
    return Step(wanted, result=result)


def learning_curve_verdict(points: dict[float, list[float]], n_train: int) -> dict[str, Any]:
    """Fit error = a * n^-b over the fractions (least squares in log-log) and predict the
    metric with twice the data."""
    xs = [math.log(f * n_train) for f in sorted(points)]
    errs = [max(1 - fmean(points[f]), 1e-6) for f in sorted(points)]
    ys = [math.log(e) for e in errs]
    mx, my = fmean(xs), fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / max(
        sum((x - mx) ** 2 for x in xs), 1e-12
    )
    now = 1 - errs[-1]
    predicted = 1 - math.exp(my + slope * (math.log(2 * n_train) - mx))
    gain = predicted - now
    noise = stdev(points[1.0]) if len(points[1.0]) > 1 else 0.0
    verdict = (
        "confirmed"
        if slope < 0 and gain > max(noise, 0.005)
        else ("refuted" if slope >= 0 else "inconclusive")
    )
    return {
        "fractions": {str(f): points[f] for f in sorted(points)},
        "slope": slope,
        "metric_now": now,
        "predicted_metric_with_2x_data": predicted,
        "effect": gain,
        "interval": None,
        "verdict": verdict,
    }
