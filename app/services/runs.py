"""Run reports: stored with diagnosis and recommendation, epochs appended, history browsed."""

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.advisor.diagnosis import Diagnosis, Epoch, diagnose, infer_criterion, resolve_criterion
from app.advisor.ladder import Facts, History, Recommendation, recommend
from app.models import Project, Run, Verification
from app.schemas import EpochIn, RunCreate, check_epoch_order, check_metric_present
from app.services.errors import Invalid, NotFound
from app.services.projects import Scope

MAX_LINEAGE_DEPTH = 1000


def facts_of(
    task: str, model: dict[str, Any], data: dict[str, Any], constraints: dict[str, Any]
) -> Facts:
    mixup = data.get("mixup") or {}
    return Facts(
        task=task,
        arch=model.get("arch"),
        batchnorm=model.get("batchnorm"),
        head_dropout=model.get("head_dropout"),
        body_dropout=model.get("body_dropout"),
        weight_decay=model.get("weight_decay"),
        lr=model.get("lr"),
        augment=data.get("augment"),
        mixup_kind=mixup.get("kind"),
        mixup_alpha=mixup.get("alpha"),
        more_data_available=data.get("more_data_available"),
        data_fraction=data.get("data_fraction"),
        time_limited=bool(constraints.get("time_limited")),
        memory_limited=bool(constraints.get("memory_limited")),
    )


def assess(run: Run, history: History) -> tuple[Diagnosis, Recommendation]:
    """Diagnose the run's epochs and walk the ladder; pure computation on the run's fields."""
    epochs = [Epoch(e["epoch"], e["train_loss"], e["valid_loss"], e["metrics"]) for e in run.epochs]
    if run.metric_name is None:
        criterion = infer_criterion(epochs)
    else:
        criterion = resolve_criterion(run.metric_name, run.metric_higher_is_better)
    diagnosis = diagnose(epochs, criterion)
    facts = facts_of(run.task, run.model_facts, run.data_facts, run.constraints)
    return diagnosis, recommend(diagnosis, facts, history)


def _store_assessment(run: Run, history: History) -> None:
    diagnosis, rec = assess(run, history)
    run.verdict = diagnosis.verdict.value
    run.rung = rec.rung
    run.diagnosis = diagnosis.to_dict()
    run.recommendation = rec.to_dict()


def ancestor_ids(session: Session, parent_id: int | None) -> list[int]:
    """The parent chain starting at ``parent_id``, nearest first, in one recursive query."""
    if parent_id is None:
        return []
    chain = select(Run.id, Run.parent_id).where(Run.id == parent_id).cte("chain", recursive=True)
    chain = chain.union(select(Run.id, Run.parent_id).join(chain, Run.id == chain.c.parent_id))
    rows = session.execute(select(chain.c.id, chain.c.parent_id).limit(MAX_LINEAGE_DEPTH))
    parents: dict[int, int | None] = dict(rows.all())
    ordered: list[int] = []
    current: int | None = parent_id
    while current is not None and current in parents:
        ordered.append(current)
        current = parents[current]
    return ordered


def lineage_history(session: Session, run_ids: Sequence[int]) -> History:
    """Rungs applied along the chain and the latest verification verdict of each rung."""
    if not run_ids:
        return History()
    applied = {r for r in session.scalars(select(Run.applied_rung).where(Run.id.in_(run_ids))) if r}
    latest: dict[str, str] = {}
    rows = session.execute(
        select(Verification.rung, Verification.verdict)
        .where(Verification.run_id.in_(run_ids), Verification.verdict.is_not(None))
        .order_by(Verification.finished_at, Verification.id)
    )
    for rung, verdict in rows:
        latest[rung] = verdict or ""
    return History(
        applied=frozenset(applied),
        confirmed=frozenset(r for r, v in latest.items() if v == "confirmed"),
        refuted=frozenset(r for r, v in latest.items() if v == "refuted"),
    )


def _check_length(n_epochs: int, max_epochs: int) -> None:
    if n_epochs > max_epochs:
        raise Invalid(f"{n_epochs} epochs is over the limit of {max_epochs}", field="epochs")


def create_run(
    session: Session, project_id: int, body: RunCreate, *, max_epochs: int, source: str = "client"
) -> Run:
    _check_length(len(body.epochs), max_epochs)
    parent: Run | None = None
    applied = body.applied_rung.value if body.applied_rung else None
    if body.parent_id is not None:
        parent = session.get(Run, body.parent_id)
        if parent is None or parent.project_id != project_id:
            raise Invalid(f"unknown run id {body.parent_id}", field="parent_id")
        applied = applied or parent.rung
    metric = body.metric
    try:
        criterion = resolve_criterion(metric.name, metric.higher_is_better) if metric else None
    except ValueError as exc:
        raise Invalid(str(exc), field="metric.higher_is_better") from exc
    run = Run(
        project_id=project_id,
        name=body.name,
        parent_id=body.parent_id,
        applied_rung=applied,
        source=source,
        task=body.task,
        recipe=body.recipe,
        model_facts=body.model.model_dump(exclude_none=True),
        data_facts=body.data.model_dump(exclude_none=True),
        constraints=body.constraints.model_dump(),
        metric_name=criterion.name if criterion else None,
        metric_higher_is_better=criterion.higher_is_better if criterion else None,
        epochs=[e.model_dump() for e in body.epochs],
    )
    chain = [parent.id, *ancestor_ids(session, parent.parent_id)] if parent else []
    history = lineage_history(session, chain)
    if applied:
        history = History(history.applied | {applied}, history.confirmed, history.refuted)
    _store_assessment(run, history)
    session.add(run)
    session.flush()
    return run


def append_epochs(session: Session, run: Run, epochs: list[EpochIn], *, max_epochs: int) -> Run:
    _check_length(len(run.epochs) + len(epochs), max_epochs)
    last = run.epochs[-1]["epoch"] if run.epochs else None
    try:
        check_epoch_order(epochs, after=last)
        check_metric_present(epochs, run.metric_name)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    run.epochs = [*run.epochs, *(e.model_dump() for e in epochs)]
    _store_assessment(
        run, lineage_history(session, [run.id, *ancestor_ids(session, run.parent_id)])
    )
    session.flush()
    return run


def get_run(session: Session, scope: Scope, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None or not scope.visible(run.project_id):
        # Another project's run answers exactly like a missing one.
        raise NotFound(f"run {run_id} not found")
    return run


def summary_payload(run: Run, project: str) -> dict[str, Any]:
    """The :class:`RunSummary` contract as plain data, serialised without a second validation."""
    return {
        "id": run.id,
        "name": run.name,
        "project": project,
        "parent_id": run.parent_id,
        "applied_rung": run.applied_rung,
        "source": run.source,
        "task": run.task,
        "verdict": run.verdict,
        "rung": run.rung,
        "n_epochs": len(run.epochs),
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }


def run_payload(run: Run, project: str) -> dict[str, Any]:
    """The :class:`RunOut` contract as plain data."""
    metric = (
        {"name": run.metric_name, "higher_is_better": run.metric_higher_is_better}
        if run.metric_name
        else None
    )
    return {
        **summary_payload(run, project),
        "metric": metric,
        "model": run.model_facts,
        "data": run.data_facts,
        "constraints": run.constraints,
        "recipe": run.recipe,
        "epochs": run.epochs,
        "diagnosis": run.diagnosis,
        "recommendation": run.recommendation,
    }


def summaries(runs: Sequence[Run]) -> list[dict[str, Any]]:
    return [summary_payload(r, r.project.name) for r in runs]


def encode_cursor(run_id: int) -> str:
    return base64.urlsafe_b64encode(f"r{run_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("r"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("malformed cursor", field="cursor") from exc


def list_runs(
    session: Session,
    scope: Scope,
    *,
    project: str | None = None,
    verdict: str | None = None,
    rung: str | None = None,
    name: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Run], str | None]:
    """Newest first; the cursor is the last id seen, so pages stay stable while runs arrive."""
    query: Select[Run] = select(Run).order_by(Run.id.desc()).limit(limit + 1)
    if not scope.sees_all:
        query = query.where(Run.project_id == scope.project_id)
    if project is not None:
        query = query.join(Project, Project.id == Run.project_id).where(Project.name == project)
    if verdict is not None:
        query = query.where(Run.verdict == verdict)
    if rung is not None:
        query = query.where(Run.rung == rung)
    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Run.name.ilike(f"%{escaped}%", escape="\\"))
    if created_after is not None:
        query = query.where(Run.created_at >= created_after)
    if created_before is not None:
        query = query.where(Run.created_at < created_before)
    if cursor:
        query = query.where(Run.id < decode_cursor(cursor))
    runs = list(session.scalars(query))
    more = len(runs) > limit
    runs = runs[:limit]
    return runs, encode_cursor(runs[-1].id) if more and runs else None


def descendant_ids(session: Session, run_id: int) -> list[int]:
    """All runs derived from ``run_id``, breadth-first."""
    found: list[int] = []
    frontier = [run_id]
    while frontier and len(found) < MAX_LINEAGE_DEPTH * 10:
        frontier = list(
            session.scalars(select(Run.id).where(Run.parent_id.in_(frontier)).order_by(Run.id))
        )
        found.extend(frontier)
    return found


def runs_by_ids(session: Session, ids: list[int]) -> list[Run]:
    by_id = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids)))} if ids else {}
    return [by_id[i] for i in ids if i in by_id]
