"""The verification protocol: baseline and candidates trained on the same data, schedule and
seeds; verdicts from the paired per-seed differences (``app.advisor.verdicts`` judges).

- One rung: seed pairs are trained one at a time until the verdict settles, from ``min_seeds``
  to ``max_seeds`` pairs.
- A race: the baseline is trained once per seed and the candidates side by side, epoch by epoch;
  at each checkpoint (a quarter, then half of the epochs) candidates that trail the leader by a
  clear margin stop; survivors finish and are judged against the shared baseline, then ranked.
- ``more_data`` with nothing more on disk: a learning curve over fractions of the training set
  predicts what more data would bring.

Every finished trial is stored, keyed by (recipe fingerprint, seed), and reused by any later
verification — or by this one, when another worker takes it over after a crash. A candidate
stopped in a race is stored too, under its fingerprint and the checkpoint, so a takeover does not
train it again.
"""

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.advisor.verdicts import Comparison, Criterion, Paired, judge, next_seed, trailing
from app.builder.recipe import Recipe
from app.db import Database
from app.models import Trial, Verification
from app.schemas import RunCreate
from app.services.projects import Scope
from app.services.runs import get_run
from app.services.verifications import candidates_of, protocol_of
from app.training.loop import EpochResult, Stopped
from app.training.trial import PRIMARY_METRIC, epochs, outcome, run_trial

FRACTIONS = (0.25, 0.5, 1.0)
ALL = Scope(0, "", sees_all=True)
# Racing checkpoints, as shares of the epochs (successive halving of the budget).
CHECKPOINTS = (0.25, 0.5)


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


class Reporter:
    """Turns epochs into the job's progress (trial, epoch, elapsed, estimated remaining). The
    totals grow as the protocol decides to train more and shrink as it decides to train less."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self.total, self.done, self.trials, self.emit = 0, 0, 0, emit
        self.started = time.monotonic()
        self.current: dict[str, Any] = {}
        self.seen: list[tuple[str, int, str]] = []

    def plan(self, epochs: int) -> None:
        """One more training of ``epochs`` epochs to come."""
        self.total += epochs
        self.trials += 1

    def skip(self, epochs: int) -> None:
        self.total -= epochs

    def trial(self, role: str, seed: int, epochs: int, rung: str = "", done: int = 0) -> None:
        """Training ``role`` (of ``rung``) with ``seed`` goes on (or starts)."""
        if (role, seed, rung) not in self.seen:
            self.seen.append((role, seed, rung))
        index = self.seen.index((role, seed, rung)) + 1
        self.current = {
            "trial": index,
            "trials": max(self.trials, index),
            "role": f"{role} {rung}".strip(),
            "seed": seed,
            "epochs": epochs,
        }
        self.report(epoch=done)

    def epoch(self, result: EpochResult) -> None:
        self.done += 1
        self.report(epoch=result.epoch + 1)

    def report(self, epoch: int) -> None:
        elapsed = time.monotonic() - self.started
        rate = elapsed / self.done if self.done else None
        self.emit(
            {
                **self.current,
                "epoch": epoch,
                "elapsed_s": round(elapsed, 1),
                "eta_s": round(rate * max(self.total - self.done, 0), 1) if rate else None,
                "epochs_done": self.done,
                "epochs_total": self.total,
            }
        )


@dataclass
class Context:
    """What every trial of one job shares."""

    db: Database
    job_id: int
    devices: tuple[str, ...]  # one, or several for one training across them
    roots: Sequence[Path]
    reporter: Reporter
    should_stop: Callable[[], bool]
    trained: int = 0
    reused: int = 0
    fresh: set[int] = field(default_factory=set)  # ids of the trials this job stored
    # The candidates' trainings as child runs, stored with the result (queue.complete).
    children: list[tuple[str, RunCreate]] = field(default_factory=list)

    def stored(self, fingerprint: str, seed: int) -> Trial | None:
        with self.db.session() as session:
            return session.scalar(
                select(Trial).where(Trial.recipe_fingerprint == fingerprint, Trial.seed == seed)
            )

    def store(
        self, role: str, recipe: Recipe, fingerprint: str, seed: int, found: dict[str, Any]
    ) -> Trial:
        """Keep a trial; another worker's copy of the same trial wins if it came first. A
        worker that lost the job (or is asked to stop) writes nothing more."""
        if self.should_stop():
            raise Stopped(f"stopped before storing the {role} trial of seed {seed}")
        row = Trial(
            verification_id=self.job_id,
            role=role,
            recipe_fingerprint=fingerprint,
            seed=seed,
            recipe=recipe.model_dump(mode="json"),
            curve=found["curve"],
            figures={**found["figures"], "n_train": found["n_train"]},
            duration_s=found["duration_s"],
            device=found["device"],
        )
        try:
            with self.db.session() as session:
                session.add(row)
        except IntegrityError:
            existing = self.stored(fingerprint, seed)
            assert existing is not None
            return existing
        self.fresh.add(row.id)
        return row

    def per_seed(self, role: str, seed: int, row: Trial, **extra: Any) -> dict[str, Any]:
        figures = row.figures
        return {"seed": seed, "role": role, "reused": row.id not in self.fresh, **extra, **figures}

    def epochs(self, recipe: Recipe, seed: int, label: str | None) -> Generator[EpochResult]:
        for result in epochs(
            recipe,
            seed,
            devices=self.devices,
            roots=self.roots,
            should_stop=self.should_stop,
            label=label,
        ):
            self.reporter.epoch(result)
            yield result

    def trial(self, role: str, recipe: Recipe, seed: int) -> Trial:
        """The trial of ``recipe`` with ``seed``: the stored one when there is one."""
        fingerprint = recipe.fingerprint()
        stored = self.stored(fingerprint, seed)
        if stored is not None:
            self.reused += 1
            return stored
        self.reporter.plan(recipe.epochs)
        self.reporter.trial(role, seed, recipe.epochs)
        found = run_trial(
            recipe,
            seed,
            devices=self.devices,
            roots=self.roots,
            on_epoch=self.reporter.epoch,
            should_stop=self.should_stop,
            label=f"{role} seed {seed}",
        )
        self.trained += 1
        return self.store(role, recipe, fingerprint, seed, found)

    def counts(self) -> dict[str, int]:
        return {
            "trainings": self.trained + self.reused,
            "trials_trained": self.trained,
            "trials_reused": self.reused,
            "epochs_trained": self.reporter.done,
        }


@dataclass(frozen=True)
class Job:
    run_id: int
    seeds: list[int]
    baseline: Recipe
    candidates: dict[str, Recipe]
    protocol: dict[str, Any]

    @property
    def criterion(self) -> Criterion:
        return "final" if self.protocol["criterion"] == "final" else "best"

    @property
    def smallest_effect(self) -> float:
        return float(self.protocol["smallest_effect"])


def load_job(db: Database, job_id: int) -> Job:
    with db.session() as session:
        job = session.get(Verification, job_id)
        assert job is not None
        return Job(
            run_id=job.run_id,
            seeds=list(job.seeds),
            baseline=Recipe.model_validate(job.budget["baseline_recipe"]),
            candidates={
                rung: Recipe.model_validate(recipe) for rung, recipe in candidates_of(job).items()
            },
            protocol=protocol_of(job),
        )


def verify(
    db: Database,
    job_id: int,
    *,
    devices: Sequence[str],
    roots: Sequence[Path],
    progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> tuple[dict[str, Any], list[tuple[str, RunCreate]]]:
    """Run the protocol for job ``job_id``: the result to store with it, and the child runs to
    store in the same transaction (the candidates' trainings, by rung)."""
    job = load_job(db, job_id)
    ctx = Context(db, job_id, tuple(devices), roots, Reporter(progress), should_stop)
    metric = PRIMARY_METRIC[job.baseline.task]
    common = {
        "metric": metric,
        "criterion": job.criterion,
        "criterion_text": f"{job.criterion}-epoch validation {metric}",
        "smallest_effect": job.smallest_effect,
    }
    if not job.candidates:
        found = learning_curve(ctx, job)
        rungs = [{"rung": "more_data", "verdict": found["verdict"], "effect": found["effect"]}]
        return {**common, **found, "rungs": rungs, **ctx.counts()}, []
    found = race(ctx, job) if job.protocol["race"] else adaptive(ctx, job)
    return {**common, **found, **ctx.counts()}, ctx.children


# --- one rung, adaptive seeds ------------------------------------------------------------------


def _paired(seed: int, base: Trial, cand: Trial) -> Paired:
    b, c = base.figures, cand.figures
    return Paired(seed, b["best_metric"], b["final_metric"], c["best_metric"], c["final_metric"])


def _judged(comparisons: dict[Criterion, Comparison], criterion: Criterion) -> dict[str, Any]:
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


def adaptive(ctx: Context, job: Job) -> dict[str, Any]:
    """Seed pairs one at a time, until the verdict settles or the seeds run out."""
    ((rung, candidate),) = job.candidates.items()
    low, high = job.protocol["min_seeds"], job.protocol["max_seeds"]
    pairs: list[Paired] = []
    per_seed: list[dict[str, Any]] = []
    children: list[tuple[int, Trial]] = []
    stopped, why = "max_seeds", ""
    for seed in job.seeds[:high]:
        base = ctx.trial("baseline", job.baseline, seed)
        cand = ctx.trial("candidate", candidate, seed)
        pairs.append(_paired(seed, base, cand))
        per_seed += [ctx.per_seed("baseline", seed, base), ctx.per_seed("candidate", seed, cand)]
        children.append((seed, cand))
        diffs = judge(pairs, job.criterion, job.smallest_effect)[job.criterion].differences
        go, stop, why = next_seed(diffs, low, high, job.smallest_effect)
        if not go:
            stopped = stop or "max_seeds"
            break
    judged = _judged(judge(pairs, job.criterion, job.smallest_effect), job.criterion)
    ctx.children += _children(ctx.db, job, {rung: (candidate, children)})
    return {
        **judged,
        "per_seed": per_seed,
        "seeds_used": len(pairs),
        "stopped": stopped,
        "stopped_reason": why,
        "rungs": [{"rung": rung, **judged}],
    }


# --- a race ------------------------------------------------------------------------------------


def checkpoints(total: int) -> list[int]:
    return sorted({c for c in (max(1, round(total * f)) for f in CHECKPOINTS) if c < total})


@dataclass
class Lane:
    """One candidate trained with one seed, advanced epoch by epoch."""

    rung: str
    recipe: Recipe
    seed: int
    results: list[EpochResult] = field(default_factory=list)
    stored: Trial | None = None
    steps: Generator[EpochResult] | None = None
    started: float = 0.0

    def curve_metric(self, metric: str, upto: int) -> float:
        """The best validation metric of the first ``upto`` epochs."""
        if self.stored is not None and len(self.stored.curve) >= upto:
            return max(float(e["metrics"][metric]) for e in self.stored.curve[:upto])
        return max(r.metrics[metric] for r in self.results[:upto])


def _advance(ctx: Context, lane: Lane, upto: int) -> None:
    """Train ``lane`` to ``upto`` epochs, unless a stored trial already reaches that far."""
    if lane.stored is not None and len(lane.stored.curve) >= upto:
        return
    if lane.stored is not None:  # a stored stop, but this race goes further: train afresh
        lane.stored = None
        ctx.reused -= 1
        ctx.reporter.plan(lane.recipe.epochs)
    if lane.steps is None:
        lane.started = time.monotonic()
        lane.steps = ctx.epochs(lane.recipe, lane.seed, None)
    ctx.reporter.trial(
        "candidate", lane.seed, lane.recipe.epochs, rung=lane.rung, done=len(lane.results)
    )
    while len(lane.results) < upto:
        lane.results.append(next(lane.steps))


def _keep(ctx: Context, lane: Lane, upto: int) -> Trial:
    """Store what ``lane`` trained (to the end, or to its stop at ``upto``)."""
    if lane.stored is not None:
        return lane.stored
    if lane.steps is not None:
        lane.steps.close()
    whole = upto == lane.recipe.epochs
    print_ = lane.recipe.fingerprint() if whole else lane.recipe.fingerprint(stopped_at=upto)
    found = outcome(
        lane.recipe,
        lane.results[:upto],
        devices=ctx.devices,
        roots=ctx.roots,
        duration_s=time.monotonic() - lane.started,
    )
    ctx.trained += 1
    lane.stored = ctx.store(
        "candidate" if whole else "pruned", lane.recipe, print_, lane.seed, found
    )
    return lane.stored


def _lane(ctx: Context, rung: str, recipe: Recipe, seed: int, stops: list[int]) -> Lane:
    """A lane picks up what is stored: the whole trial, or a stop at one of the checkpoints."""
    lane = Lane(rung, recipe, seed)
    lane.stored = ctx.stored(recipe.fingerprint(), seed)
    for stop in stops if lane.stored is None else ():
        lane.stored = ctx.stored(recipe.fingerprint(stopped_at=stop), seed)
        if lane.stored is not None:
            break
    if lane.stored is not None:
        ctx.reused += 1
    else:
        ctx.reporter.plan(recipe.epochs)
    return lane


def race(ctx: Context, job: Job) -> dict[str, Any]:
    """Candidates side by side against one baseline; see the module's docstring."""
    metric = PRIMARY_METRIC[job.baseline.task]
    total = job.baseline.epochs
    stops = checkpoints(total)
    baselines = {seed: ctx.trial("baseline", job.baseline, seed) for seed in job.seeds}
    lanes = {
        rung: [_lane(ctx, rung, recipe, seed, stops) for seed in job.seeds]
        for rung, recipe in job.candidates.items()
    }
    alive = list(lanes)
    pruned: dict[str, dict[str, Any]] = {}
    for stop in [*stops, total]:
        for rung in alive:
            for lane in lanes[rung]:
                _advance(ctx, lane, stop)
        if stop == total:
            break
        scores = {rung: [lane.curve_metric(metric, stop) for lane in lanes[rung]] for rung in alive}
        for rung, why in trailing(scores, job.smallest_effect).items():
            for lane in lanes[rung]:
                if lane.stored is None:  # trained here: the rest of its epochs are not
                    ctx.reporter.skip(total - stop)
                _keep(ctx, lane, stop)
            pruned[rung] = {
                "epoch": stop,
                "reason": f"stopped at epoch {stop}: {why}",
                "score": fmean(scores[rung]),
            }
            alive.remove(rung)
    per_seed = [ctx.per_seed("baseline", seed, row) for seed, row in baselines.items()]
    judged: dict[str, dict[str, Any]] = {}
    finished: dict[str, tuple[Recipe, list[tuple[int, Trial]]]] = {}
    for rung in alive:
        rows = [(lane.seed, _keep(ctx, lane, total)) for lane in lanes[rung]]
        pairs = [_paired(seed, baselines[seed], row) for seed, row in rows]
        judged[rung] = _judged(judge(pairs, job.criterion, job.smallest_effect), job.criterion)
        per_seed += [ctx.per_seed("candidate", seed, row, rung=rung) for seed, row in rows]
        finished[rung] = (job.candidates[rung], rows)
    for rung in pruned:
        per_seed += [
            ctx.per_seed("pruned", lane.seed, lane.stored, rung=rung)
            for lane in lanes[rung]
            if lane.stored is not None
        ]
    ctx.children += _children(ctx.db, job, finished)
    ranking = sorted(alive, key=lambda r: judged[r]["effect"], reverse=True)
    ranking += sorted(pruned, key=lambda r: (-pruned[r]["epoch"], -pruned[r]["score"]))
    rungs = []
    for rank, rung in enumerate(ranking, 1):
        if rung in judged:
            rungs.append({"rung": rung, "rank": rank, **judged[rung]})
        else:
            cut = pruned[rung]
            rungs.append({
                "rung": rung, "rank": rank, "verdict": "inconclusive", "effect": None,
                "interval": None, "reason": cut["reason"], "pruned_at": cut["epoch"],
            })  # fmt: skip
    for entry in rungs:  # this job's own training of each rung (nothing, when all was stored)
        entry["epochs_trained"] = sum(len(lane.results) for lane in lanes[entry["rung"]])
    winner = rungs[0]
    return {
        "verdict": winner["verdict"],
        "effect": winner["effect"],
        "interval": winner["interval"],
        "reason": f"{winner['rung']} ranks first: {winner['reason']}",
        "per_seed": per_seed,
        "seeds_used": len(job.seeds),
        "stopped": "race",
        "stopped_reason": f"a race trains every seed ({len(job.seeds)})",
        "race": {"winner": winner["rung"], "checkpoints": stops, "ranking": ranking},
        "rungs": rungs,
    }


# --- more data, as a learning curve ------------------------------------------------------------


def learning_curve(ctx: Context, job: Job) -> dict[str, Any]:
    """More data that is not on disk: the baseline on fractions of its training set."""
    seeds = job.seeds[: max(job.protocol["min_seeds"], min(3, len(job.seeds)))]
    points: dict[float, list[float]] = {}
    per_seed = []
    n_train = 0
    for seed in seeds:
        for f in FRACTIONS:
            subset = job.baseline.changed({"data_fraction": f * job.baseline.data_fraction})
            row = ctx.trial(f"fraction {f}", subset, seed)
            points.setdefault(f, []).append(row.figures[f"{job.criterion}_metric"])
            per_seed.append(ctx.per_seed(f"fraction {f}", seed, row))
            if f == 1.0:
                n_train = int(row.figures["n_train"])
    found = learning_curve_verdict(points, n_train)
    return {
        **found,
        "per_seed": per_seed,
        "seeds_used": len(seeds),
        "stopped": "max_seeds",
        "stopped_reason": f"a learning curve trains {len(seeds)} seeds of each fraction",
    }


def _children(
    db: Database, job: Job, finished: dict[str, tuple[Recipe, list[tuple[int, Trial]]]]
) -> list[tuple[str, RunCreate]]:
    """Each finished candidate's trainings as reports of runs derived from the verified one."""
    with db.session() as session:
        run = get_run(session, ALL, job.run_id)
    metric = PRIMARY_METRIC[job.baseline.task]
    name = run["name"] or f"run {job.run_id}"
    facts = {key: run["data_facts"].get(key) for key in ("more_data_available", "n_classes")}
    return [
        (
            rung,
            RunCreate.model_validate(
                {
                    "name": f"{name} + {rung} (seed {seed})"[:200],
                    "parent_id": job.run_id,
                    "applied_rung": rung,
                    "recipe": candidate,
                    "metric": {"name": metric, "higher_is_better": True},
                    "epochs": row.curve,
                    "data": {**facts, "n_train": row.figures.get("n_train")},
                    "constraints": run["constraints"],
                    "params": run["params"],
                    "tags": run["tags"],
                }
            ),
        )
        for rung, (candidate, rows) in finished.items()
        for seed, row in rows
    ]
