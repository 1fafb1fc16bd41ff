"""The verification protocol: baseline and candidate trained on the same data, schedule and
seeds; a verdict from the paired per-seed differences of the final validation metric.

Trials already trained with the same recipe fingerprint and seed are reused. When the rung is
``more_data`` and there is nothing more on disk, a learning curve over fractions of the training
set predicts what more data would bring instead.
"""

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.builder.recipe import Recipe
from app.db import Database
from app.models import Trial, Verification
from app.schemas import RunCreate
from app.services.projects import Scope
from app.services.runs import create_run, get_run
from app.training.loop import EpochResult
from app.training.trial import PRIMARY_METRIC, run_trial

# Two-sided 95% Student t quantiles by degrees of freedom (1.96 beyond the table).
T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}
FRACTIONS = (0.25, 0.5, 1.0)
ALL = Scope(0, "", sees_all=True)


def t95(df: int) -> float:
    known = [k for k in T95 if k <= df]
    return T95[max(known)] if df <= 30 else 1.96


def paired_verdict(baseline: Sequence[float], candidate: Sequence[float]) -> dict[str, Any]:
    """``confirmed`` when the 95% interval of the mean paired difference lies above zero,
    ``refuted`` when it lies below or the mean is worse, else ``inconclusive``."""
    diffs = [c - b for b, c in zip(baseline, candidate, strict=True)]
    mean = fmean(diffs)
    if len(diffs) > 1:
        half = t95(len(diffs) - 1) * stdev(diffs) / math.sqrt(len(diffs))
        interval: list[float] | None = [mean - half, mean + half]
    else:
        interval = None
    if interval is not None and interval[0] > 0:
        verdict = "confirmed"
    elif (interval is not None and interval[1] < 0) or mean < 0:
        verdict = "refuted"
    else:
        verdict = "inconclusive"
    return {"differences": diffs, "effect": mean, "interval": interval, "verdict": verdict}


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
    """Turns epochs into the job's progress (trial, epoch, elapsed, estimated remaining)."""

    def __init__(self, total_epochs: int, emit: Callable[[dict[str, Any]], None]) -> None:
        self.total, self.done, self.emit = total_epochs, 0, emit
        self.started = time.monotonic()
        self.current: dict[str, Any] = {}

    def trial(self, index: int, trials: int, role: str, seed: int, epochs: int) -> None:
        self.current = {
            "trial": index + 1,
            "trials": trials,
            "role": role,
            "seed": seed,
            "epochs": epochs,
        }
        self.report(epoch=0)

    def skip(self, epochs: int) -> None:
        self.total -= epochs

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
                "eta_s": round(rate * (self.total - self.done), 1) if rate else None,
                "epochs_done": self.done,
                "epochs_total": self.total,
            }
        )


def _stored_trial(db: Database, fingerprint: str, seed: int) -> Trial | None:
    with db.session() as session:
        return session.scalar(
            select(Trial).where(Trial.recipe_fingerprint == fingerprint, Trial.seed == seed)
        )


def trial(
    db: Database,
    job_id: int,
    role: str,
    recipe: Recipe,
    seed: int,
    *,
    device: str,
    roots: Sequence[Path],
    reporter: Reporter,
    should_stop: Callable[[], bool],
) -> tuple[Trial, bool]:
    """The trial of ``recipe`` with ``seed``: the stored one when there is one (reused=True)."""
    fingerprint = recipe.fingerprint()
    stored = _stored_trial(db, fingerprint, seed)
    if stored is not None:
        reporter.skip(recipe.epochs)
        return stored, True
    outcome = run_trial(
        recipe,
        seed,
        device=device,
        roots=roots,
        on_epoch=reporter.epoch,
        should_stop=should_stop,
        label=f"{role} seed {seed}",
    )
    row = Trial(
        verification_id=job_id,
        role=role,
        recipe_fingerprint=fingerprint,
        seed=seed,
        recipe=recipe.model_dump(mode="json"),
        curve=outcome["curve"],
        figures={**outcome["figures"], "n_train": outcome["n_train"]},
        duration_s=outcome["duration_s"],
        device=outcome["device"],
    )
    try:
        with db.session() as session:
            session.add(row)
    except IntegrityError:  # another worker stored the same trial meanwhile: use theirs
        existing = _stored_trial(db, fingerprint, seed)
        assert existing is not None
        return existing, True
    return row, False


def verify(
    db: Database,
    job_id: int,
    *,
    device: str,
    roots: Sequence[Path],
    progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """Run the protocol for job ``job_id``; returns the result to store with it."""
    with db.session() as session:
        job = session.get(Verification, job_id)
        assert job is not None
        run_id, rung, seeds = job.run_id, job.rung, list(job.seeds)
        baseline = Recipe.model_validate(job.budget["baseline_recipe"])
        candidate = Recipe.model_validate(job.candidate_recipe) if job.candidate_recipe else None
    plan: list[tuple[str, Recipe, int]] = []
    for seed in seeds:
        if candidate is not None:
            plan += [("baseline", baseline, seed), ("candidate", candidate, seed)]
        else:
            for f in FRACTIONS:
                subset = baseline.changed({"data_fraction": f * baseline.data_fraction})
                plan.append((f"fraction {f}", subset, seed))
    reporter = Reporter(sum(r.epochs for _, r, _ in plan), progress)
    trials: list[tuple[str, int, Trial, bool]] = []
    for index, (role, recipe, seed) in enumerate(plan):
        reporter.trial(index, len(plan), role, seed, recipe.epochs)
        row, reused = trial(
            db,
            job_id,
            role,
            recipe,
            seed,
            device=device,
            roots=roots,
            reporter=reporter,
            should_stop=should_stop,
        )
        trials.append((role, seed, row, reused))

    metric = PRIMARY_METRIC[baseline.task]
    per_seed = [
        {"seed": seed, "role": role, "reused": reused, **row.figures}
        for role, seed, row, reused in trials
    ]
    if candidate is not None:
        base = [t.figures["final_metric"] for role, _, t, _ in trials if role == "baseline"]
        cand = [t.figures["final_metric"] for role, _, t, _ in trials if role == "candidate"]
        outcome = paired_verdict(base, cand)
    else:
        points: dict[float, list[float]] = {}
        for (_, recipe, _), (_, _, t, _) in zip(plan, trials, strict=True):
            f = recipe.data_fraction / baseline.data_fraction
            points.setdefault(round(f, 6), []).append(t.figures["final_metric"])
        full = [t for role, _, t, _ in trials if role == "fraction 1.0"]
        outcome = learning_curve_verdict(points, int(full[0].figures["n_train"]))
    children = _child_runs(db, run_id, rung, candidate, metric, trials)
    return {
        "criterion": f"final validation {metric}",
        "metric": metric,
        "per_seed": per_seed,
        "trials_trained": sum(not reused for *_, reused in trials),
        "trials_reused": sum(reused for *_, reused in trials),
        "child_runs": children,
        **outcome,
    }


def _child_runs(
    db: Database,
    run_id: int,
    rung: str,
    candidate: Recipe | None,
    metric: str,
    trials: list[tuple[str, int, Trial, bool]],
) -> list[int]:
    """The candidate's trainings, as runs derived from the verified one."""
    if candidate is None:
        return []
    ids = []
    with db.session() as session:
        run = get_run(session, ALL, run_id)
        for role, seed, row, _ in trials:
            if role != "candidate":
                continue
            body = RunCreate.model_validate(
                {
                    "name": f"{run['name'] or f'run {run_id}'} + {rung} (seed {seed})"[:200],
                    "parent_id": run_id,
                    "applied_rung": rung,
                    "recipe": candidate,
                    "metric": {"name": metric, "higher_is_better": True},
                    "epochs": row.curve,
                    "data": {
                        key: run["data_facts"].get(key)
                        for key in ("more_data_available", "n_classes")
                    },
                    "constraints": run["constraints"],
                    "params": run["params"],
                    "tags": run["tags"],
                }
            )
            child = create_run(
                session,
                (run["project_id"], run["project"]),
                body,
                max_epochs=100_000,
                source="verification",
            )
            ids.append(child["id"])
    return ids
