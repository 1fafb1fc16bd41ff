"""Verification requests: checked here, and their trials queued (:mod:`app.services.trials`);
workers do the training."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.builder.recipe import Recipe
from app.builder.remedies import NotApplicable, apply_remedy
from app.models import JobStatus, Run, Verification
from app.schemas import VerificationCreate
from app.services.errors import Conflict, NotFound
from app.services.projects import Scope
from app.services.runs import RunRow, check_recipe_data
from app.services.trials import advance, candidates_of, protocol_of

MAX_ATTEMPTS = 3


def candidate_for(baseline: Recipe, rung: str, level: int | None) -> Recipe | None:
    """The recipe to train against the baseline; None for more data that is not on disk (the
    worker then measures a learning curve instead)."""
    try:
        return apply_remedy(baseline, rung, level)
    except NotApplicable as exc:
        if rung == "more_data" and baseline.data_fraction >= 1.0:
            return None
        raise Conflict(f"rung '{rung}' cannot change this run's recipe: {exc.reason}") from exc


def request(
    session: Session, run: RunRow, body: VerificationCreate, roots: Sequence[Path]
) -> Verification:
    if run["recipe"] is None:
        raise Conflict(
            f"run {run['id']} has no recipe: only a run the model builder can reproduce "
            "can be verified (report it with a 'recipe')"
        )
    baseline = Recipe.model_validate(run["recipe"])
    if body.epochs is not None:
        baseline = baseline.changed({"epochs": body.epochs})
    check_recipe_data(baseline.data, roots)
    seeds = body.seed_list()
    protocol: dict[str, Any] = {
        "min_seeds": min(body.min_seeds, len(seeds)),
        "max_seeds": len(seeds),
        "criterion": body.criterion,
        "smallest_effect": body.smallest_effect,
        "race": body.racing,
    }
    if body.racing:
        candidates = _race_candidates(run, baseline, body)
        rung = next(iter(candidates))
        protocol["min_seeds"] = len(seeds)  # a race trains every seed: one shared baseline
        candidate_recipe: dict[str, Any] = {}
    else:
        rung = body.rung.value if body.rung else run["rung"]
        if rung is None:
            raise Conflict(f"run {run['id']} has no recommended remedy; name the 'rung' to verify")
        candidate = candidate_for(baseline, rung, body.level)
        candidates = {rung: candidate.model_dump(mode="json")} if candidate else {}
        candidate_recipe = candidates.get(rung, {})
    job = Verification(
        run_id=run["id"],
        rung=rung,
        level=body.level,
        candidate_recipe=candidate_recipe,
        seeds=seeds,
        epochs=baseline.epochs,
        device=body.device,
        gpus=body.gpus,
        budget={
            "baseline_recipe": baseline.model_dump(mode="json"),
            # Pairs, not an object: PostgreSQL's JSONB does not keep an object's key order.
            "candidates": [[r, recipe] for r, recipe in candidates.items()],
            "protocol": protocol,
        },
        max_attempts=MAX_ATTEMPTS,
    )
    session.add(job)
    session.flush()
    advance(session, job.id)  # queues its first trials and wakes idle workers
    session.refresh(job)
    return job


def _race_candidates(run: RunRow, baseline: Recipe, body: VerificationCreate) -> dict[str, Any]:
    """The racing rungs and their recipes: those named, or the next open rungs of the run's
    ladder that change the recipe (more data that is not on disk cannot race)."""
    if body.rungs is not None:
        return {
            r.value: _race_recipe(baseline, r.value, body.level).model_dump(mode="json")
            for r in body.rungs
        }
    assert body.race is not None
    steps = run["recommendation"].get("ladder") or []
    found: dict[str, Any] = {}
    for step in steps:
        if step["status"] == "skipped" or len(found) == body.race:
            continue
        try:
            found[step["rung"]] = apply_remedy(baseline, step["rung"]).model_dump(mode="json")
        except NotApplicable:
            continue
    if len(found) < 2:
        raise Conflict(
            f"run {run['id']} has {len(found)} open rung(s) that change its recipe; "
            "a race needs at least two"
        )
    return found


def _race_recipe(baseline: Recipe, rung: str, level: int | None) -> Recipe:
    candidate = candidate_for(baseline, rung, level)
    if candidate is None:
        raise Conflict(
            f"rung '{rung}' cannot race: there is no more data on disk (verify it alone for a "
            "learning curve)"
        )
    return candidate


def get(session: Session, scope: Scope, job_id: int) -> Verification:
    found = session.execute(
        select(Verification, Run.project_id)
        .join(Run, Run.id == Verification.run_id)
        .where(Verification.id == job_id)
    ).one_or_none()
    if found is None or not scope.visible(found.project_id):
        # Another project's job answers exactly like a missing one, naming only what was asked
        # (never its run's id).
        raise NotFound(f"verification {job_id} not found")
    job: Verification = found.Verification
    return job


def listing(
    session: Session,
    scope: Scope,
    *,
    run_id: int | None,
    status: JobStatus | None,
    rung: str | None,
    limit: int,
) -> list[Verification]:
    query = select(Verification).join(Run, Run.id == Verification.run_id)
    if not scope.sees_all:
        query = query.where(Run.project_id == scope.project_id)
    if run_id is not None:
        query = query.where(Verification.run_id == run_id)
    if status is not None:
        query = query.where(Verification.status == status)
    if rung is not None:
        query = query.where(Verification.rung == rung)
    return list(session.scalars(query.order_by(Verification.id.desc()).limit(limit)))


def cancel(session: Session, scope: Scope, job_id: int) -> Verification:
    """Cancelled at once: its queued trials are dropped, its running ones stop at their
    worker's next heartbeat; a finished verification cannot be."""
    job = get(session, scope, job_id)
    if job.status.finished:
        raise Conflict(f"verification {job_id} already {job.status}")
    session.execute(
        update(Verification).where(Verification.id == job_id).values(cancel_requested=True)
    )
    advance(session, job_id)
    session.flush()
    session.refresh(job)
    return job


def payload(job: Verification) -> dict[str, Any]:
    return {
        "id": job.id,
        "run_id": job.run_id,
        "rung": job.rung,
        "rungs": list(candidates_of(job)) or [job.rung],
        "protocol": protocol_of(job),
        "level": job.level,
        "status": job.status,
        "finished": job.status.finished,
        "seeds": job.seeds,
        "epochs": job.epochs,
        "device": job.device,
        "gpus": job.gpus,
        # A verification retries trial by trial: the most attempts any of its trials took.
        "attempts": job.progress.get("attempts", job.attempts),
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "progress": job.progress,
        "verdict": job.verdict,
        "effect": job.effect,
        "result": job.result,
        "error": job.error,
        "candidate_recipe": job.candidate_recipe or None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }
