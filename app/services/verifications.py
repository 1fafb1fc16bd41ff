"""Verification requests: checked here, and their trials queued (:mod:`app.services.trials`);
workers do the training: the model builder's workers for a run with a recipe, the project's
agents (running the user's own script with a settings change) for a run whose script declared
its knobs."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.advisor.curves import Curves, infer_criterion, resolve_criterion
from app.advisor.knobs import NO_WAY, translate, unverifiable
from app.advisor.ladder import RUNG_BY_ID, Skip, next_step
from app.builder.recipe import Recipe
from app.builder.remedies import NotApplicable, apply_remedy
from app.models import JobStatus, Run, Verification
from app.schemas import VerificationCreate
from app.services.errors import Conflict, NotFound
from app.services.projects import Scope
from app.services.runs import RunRow, check_recipe_data, facts_of, how_verified
from app.services.trainings import Script, Training
from app.services.trials import advance, candidates_of, protocol_of

MAX_ATTEMPTS = 3


def candidate_for(run: RunRow, baseline: Training, rung: str, level: int | None) -> Training | None:
    """What to train against the baseline; None for more data that is not on disk (the
    workers then measure a learning curve instead)."""
    if isinstance(baseline, Script):
        return _script_candidate(run, baseline, rung, level)
    try:
        return apply_remedy(baseline, rung, level)
    except NotApplicable as exc:
        if rung == "more_data" and baseline.data_fraction >= 1.0:
            return None
        raise Conflict(f"rung '{rung}' cannot change this run's recipe: {exc.reason}") from exc


def _script_candidate(run: RunRow, baseline: Script, rung: str, level: int | None) -> Script | None:
    """The script's settings with the rung's change, through the knobs it declared."""
    step = next_step(RUNG_BY_ID[rung], facts_of(run), level)
    if isinstance(step, Skip):
        raise Conflict(f"rung '{rung}' cannot change this run: {step.reason}")
    knobs = (run["trainer"] or {}).get("knobs") or []
    why = unverifiable(rung, step.change, knobs)
    if why is not None:
        raise Conflict(f"rung '{rung}' cannot be verified on run {run['id']}: {why}")
    if step.change:
        return baseline.changed(translate(rung, step.change).settings)
    if not baseline.higher_is_better:
        raise Conflict(
            f"rung '{rung}' is measured as a learning curve, which needs a metric where higher "
            f"is better (accuracy, ...); run {run['id']} is judged by {baseline.metric}"
        )
    return None


def baseline_of(run: RunRow, body: VerificationCreate, roots: Sequence[Path]) -> Training:
    """What the verification retrains as it was: the run's recipe, or its script's settings."""
    how, _ = how_verified(run)
    if how is None:
        raise Conflict(f"run {run['id']} cannot be verified: {NO_WAY}")
    if run["recipe"] is not None:
        recipe = Recipe.model_validate(run["recipe"])
        if body.epochs is not None:
            recipe = recipe.changed({"epochs": body.epochs})
        check_recipe_data(recipe.data, roots)
        return recipe
    settings = dict(run["trainer"]["settings"])
    reported = settings.get("epochs")
    epochs = body.epochs or (reported if isinstance(reported, int) else run["n_epochs"])
    if "epochs" in settings:
        settings["epochs"] = epochs
    name = run["metric_name"]
    criterion = (
        infer_criterion(Curves.of(run["epochs"]))
        if name is None
        else resolve_criterion(name, run["metric_higher_is_better"])
    )
    return Script(
        run_id=run["id"],
        run_name=run["name"] or f"run {run['id']}",
        settings=settings,
        epochs=epochs,
        metric=criterion.name,
        higher_is_better=criterion.higher_is_better,
    )


def request(
    session: Session, run: RunRow, body: VerificationCreate, roots: Sequence[Path]
) -> Verification:
    baseline = baseline_of(run, body, roots)
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
        candidate = candidate_for(run, baseline, rung, body.level)
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


def _race_candidates(run: RunRow, baseline: Training, body: VerificationCreate) -> dict[str, Any]:
    """The racing rungs and what each trains: those named, or the next open rungs of the run's
    ladder that it can change (more data that is not on disk cannot race)."""
    if body.rungs is not None:
        return {
            r.value: _race_entry(run, baseline, r.value, body.level).model_dump(mode="json")
            for r in body.rungs
        }
    assert body.race is not None
    steps = run["recommendation"].get("ladder") or []
    found: dict[str, Any] = {}
    for step in steps:
        if step["status"] == "skipped" or len(found) == body.race:
            continue
        try:
            candidate = candidate_for(run, baseline, step["rung"], None)
        except Conflict:
            continue
        if candidate is not None:
            found[step["rung"]] = candidate.model_dump(mode="json")
    if len(found) < 2:
        raise Conflict(
            f"run {run['id']} has {len(found)} open rung(s) that change what it trains; "
            "a race needs at least two"
        )
    return found


def _race_entry(run: RunRow, baseline: Training, rung: str, level: int | None) -> Training:
    candidate = candidate_for(run, baseline, rung, level)
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
