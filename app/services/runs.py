"""Run reports: stored with diagnosis and recommendation, epochs appended, history browsed.

Runs are written and read with prebuilt Core statements on the session's connection rather than
ORM units of work: ingesting reports is the hot path, and the ORM's per-object bookkeeping (and
even Session.execute's) cost more than the SQL itself.
Rows travel as mappings keyed by column name (plus ``project``, the project's name, and
``tags``, the run's tags in reported order, read from ``run_tags`` for the rows being answered).
"""

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import epochs_cache
from app.advisor.curves import Curves, infer_criterion, resolve_criterion
from app.advisor.diagnosis import Verdict, diagnose
from app.advisor.evidence import Evidence, PastVerdict, Profile, comparable, gather, profile_of
from app.advisor.knobs import RECIPE, SCRIPT, facts_of_settings, why_not_verifiable
from app.advisor.ladder import Facts, History, recommend
from app.builder.datasets import DataError, check_spec, parse_spec, train_size
from app.builder.recipe import Recipe
from app.models import Project, Run, RungVerdict, RunTag, utcnow
from app.schemas import (
    ID_MAX,
    EpochIn,
    RunCreate,
    RunFilters,
    check_epoch_order,
    check_metric_present,
)
from app.services.errors import Conflict, Invalid, NotFound
from app.services.projects import Scope

MAX_LINEAGE_DEPTH = 1000

RUNS = cast(Table, Run.__table__)
PROJECTS = cast(Table, Project.__table__)
RUN_TAGS = cast(Table, RunTag.__table__)
# A run as stored: column values by name, plus "project" (the project's name) and "tags".
RunRow = Mapping[Any, Any]
SUMMARY_COLUMNS = (
    RUNS.c.id,
    RUNS.c.name,
    PROJECTS.c.name.label("project"),
    RUNS.c.parent_id,
    RUNS.c.applied_rung,
    RUNS.c.source,
    RUNS.c.task,
    RUNS.c.verdict,
    RUNS.c.rung,
    RUNS.c.n_epochs,
    RUNS.c.depth,
    RUNS.c.created_at,
    RUNS.c.updated_at,
)
DETAIL_COLUMNS = (
    *SUMMARY_COLUMNS,
    RUNS.c.project_id,
    RUNS.c.version,
    RUNS.c.metric_name,
    RUNS.c.metric_higher_is_better,
    RUNS.c.model_facts,
    RUNS.c.data_facts,
    RUNS.c.constraints,
    RUNS.c.recipe,
    RUNS.c.trainer,
    RUNS.c.params,
    RUNS.c.epochs,
    RUNS.c.diagnosis,
    RUNS.c.recommendation,
)
_SELECT_RUN = (
    select(*DETAIL_COLUMNS).join_from(RUNS, PROJECTS).where(RUNS.c.id == bindparam("run_id"))
)
# The same without the epochs: an append reads them from the process's cache when it can.
_SELECT_RUN_BUT_EPOCHS = (
    select(*(c for c in DETAIL_COLUMNS if c is not RUNS.c.epochs))
    .join_from(RUNS, PROJECTS)
    .where(RUNS.c.id == bindparam("run_id"))
)
_INSERT_RUN = insert(RUNS).returning(RUNS.c.id)
_INSERT_TAGS = insert(RUN_TAGS)
_SELECT_TAGS = (
    select(RUN_TAGS.c.run_id, RUN_TAGS.c.tag)
    .where(RUN_TAGS.c.run_id.in_(bindparam("run_ids", expanding=True)))
    .order_by(RUN_TAGS.c.run_id, RUN_TAGS.c.position)
)
_UPDATE_ASSESSED = (
    update(RUNS)
    .where(RUNS.c.id == bindparam("run_id"), RUNS.c.version == bindparam("expected_version"))
    .values(
        epochs=bindparam("epochs"),
        n_epochs=bindparam("n_epochs"),
        verdict=bindparam("verdict"),
        rung=bindparam("rung"),
        diagnosis=bindparam("diagnosis"),
        recommendation=bindparam("recommendation"),
        version=bindparam("version"),
        updated_at=bindparam("updated_at"),
    )
)


def facts_of(row: RunRow) -> Facts:
    """The ladder's facts: the recipe's when the run has one, with what only the report can say
    (more data on hand, time and memory limits); else the reported model and data facts."""
    model, data, constraints = row["model_facts"], row["data_facts"], row["constraints"]
    if row.get("trainer"):
        model, data = facts_of_settings(model, data, row["trainer"]["settings"])
    limits = {
        "more_data_available": data.get("more_data_available"),
        "time_limited": bool(constraints.get("time_limited")),
        "memory_limited": bool(constraints.get("memory_limited")),
    }
    if row["recipe"] is not None:
        return replace(Recipe.model_validate(row["recipe"]).facts(), **limits)
    mixup = data.get("mixup") or {}
    # The modality the report says, else the one a callback found from the model's classes (an
    # undeclared key of `model`, so checked here); failing both, the ladder reads the arch's name.
    found = model.get("modality")
    return Facts(
        task=row["task"],
        arch=model.get("arch"),
        batchnorm=model.get("batchnorm"),
        head_dropout=model.get("head_dropout"),
        body_dropout=model.get("body_dropout"),
        weight_decay=model.get("weight_decay"),
        lr=model.get("lr"),
        augment=data.get("augment"),
        mixup_kind=mixup.get("kind"),
        mixup_alpha=mixup.get("alpha"),
        data_fraction=data.get("data_fraction"),
        modality=data.get("modality") or (found if isinstance(found, str) else None),
        models=tuple((row.get("trainer") or {}).get("models") or ()),  # large to small
        **limits,
    )


# What the ladder learns from: a run's row -> per rung, the verdicts of similar runs.
EvidenceSource = Callable[[RunRow], Evidence]


def assess(
    row: RunRow,
    history: History,
    evidence: EvidenceSource | None = None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Diagnosis and recommendation columns for a run's values; pure computation, except that
    ``evidence`` is asked for the verdicts of similar runs when (only when) the run overfits.
    ``previous``: the diagnosis answered at the run's previous look, for a run reported while it
    trains (the verdict is then a sequential one: see :func:`diagnose`)."""
    curves = Curves.of(row["epochs"])
    name = row["metric_name"]
    criterion = (
        infer_criterion(curves)
        if name is None
        else resolve_criterion(name, row["metric_higher_is_better"])
    )
    diagnosis = diagnose(
        curves, criterion, n_classes=row["data_facts"].get("n_classes"), previous=previous
    )
    found = (
        evidence(row) if evidence is not None and diagnosis.verdict == Verdict.OVERFITTING else None
    )
    rec = recommend(diagnosis, facts_of(row), history, found)
    return {
        "verdict": diagnosis.verdict.value,
        "rung": rec.rung,
        "diagnosis": diagnosis.to_dict(),
        "recommendation": with_verifiability(rec.to_dict(), row),
    }


def how_verified(row: RunRow) -> tuple[str | None, list[str]]:
    """How the run can be trained again: its recipe by the builder, or its script (with the
    knobs it declared) by an agent; None when neither."""
    if row["recipe"] is not None:
        return RECIPE, []
    knobs = list((row.get("trainer") or {}).get("knobs") or [])
    return (SCRIPT, knobs) if knobs else (None, [])


def with_verifiability(rec: dict[str, Any], row: RunRow) -> dict[str, Any]:
    """The recommendation with, for its rung and each open rung of its ladder, whether a
    verification can try it on this run, and if not what would make it possible."""
    how, knobs = how_verified(row)
    for step in rec["ladder"]:
        if step["status"] == "skipped":
            continue
        step["verify_hint"] = why_not_verifiable(step["rung"], step["change"], how, knobs)
        step["verifiable"] = step["verify_hint"] is None
    if rec["rung"] is not None:
        rec["verify_hint"] = why_not_verifiable(rec["rung"], rec["change"], how, knobs)
        rec["verifiable"] = rec["verify_hint"] is None
    return rec


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
        select(RungVerdict.rung, RungVerdict.verdict)
        .where(RungVerdict.run_id.in_(run_ids))
        .order_by(RungVerdict.created_at, RungVerdict.id)
    )
    for rung, verdict in rows:
        latest[rung] = verdict
    return History(
        applied=frozenset(applied),
        confirmed=frozenset(r for r, v in latest.items() if v == "confirmed"),
        refuted=frozenset(r for r, v in latest.items() if v == "refuted"),
        inconclusive=frozenset(r for r, v in latest.items() if v == "inconclusive"),
    )


def recipe_n_train(recipe: Mapping[str, Any]) -> int | None:
    """How many training examples a recipe trains on: its dataset's training split times its
    ``data_fraction``; None when the dataset's size is not in the spec (an image folder) or the
    spec is not readable."""
    try:
        size = train_size(parse_spec(recipe.get("data")))
    except DataError:
        return None
    if size is None:
        return None
    return max(1, round(size * float(recipe.get("data_fraction") or 1.0)))


def check_recipe_data(data: dict[str, Any] | None, roots: Sequence[Path]) -> None:
    """Refuse (422, naming the field) a recipe's dataset that cannot be served: an unknown kind
    or option, a path missing or not inside the data ``roots``. Checked when a run is reported
    and again when it is to be verified (the folder may be gone since)."""
    try:
        check_spec(data, roots)
    except DataError as exc:
        raise Invalid(exc.reason, field=exc.field) from exc


# How far a reported training-set size may be from the recipe's own before the two are taken to
# be different data (a report may count after its own filtering, or round).
N_TRAIN_TOLERANCE = 0.1


def check_recipe_agrees(body: RunCreate) -> None:
    """A recipe is what a verification trains in place of the reported model: refuse (422,
    naming the field) one that contradicts the report's own facts, the task, the architecture or
    the training-set size, rather than verify a model that was never trained."""
    recipe = body.recipe
    assert recipe is not None
    if "task" in body.model_fields_set and body.task != recipe.task:
        raise Invalid(
            f"the recipe trains {recipe.task} but the report's task is {body.task}",
            field="recipe.task",
        )
    arch = body.model.arch
    if arch is not None and arch != recipe.arch:
        raise Invalid(
            f"the recipe builds {recipe.arch} but the report's model is {arch}: a verification "
            "would train a different model (report the recipe of this model, or leave the "
            "recipe out)",
            field="recipe.arch",
        )
    reported = body.data.n_train
    trains = recipe_n_train(recipe.model_dump(mode="json"))
    if reported and trains and abs(trains - reported) > N_TRAIN_TOLERANCE * reported:
        raise Invalid(
            f"the recipe trains on {trains} examples but the report's data.n_train is "
            f"{reported}: a verification would train on different data",
            field="recipe.data",
        )


def run_profile(row: RunRow) -> Profile:
    """Task, architecture family and training-set size of a run: the architecture from its
    recipe, else its reported model facts; the size from its reported ``data.n_train``, else
    from its recipe's dataset."""
    recipe, data = row["recipe"], row["data_facts"] or {}
    arch = recipe.get("arch") if recipe else (row["model_facts"] or {}).get("arch")
    n_train = data.get("n_train")
    if not isinstance(n_train, int) and recipe:
        n_train = recipe_n_train(recipe)
    return profile_of(row["task"], arch if isinstance(arch, str) else None, n_train)


def similar_evidence(
    session: Session, profile: Profile, project_id: int, *, shared: bool = False
) -> Evidence:
    """Per rung, the verdicts of verified runs similar to ``profile``, from the project's history
    (every project's when ``shared``), in one query; nothing to read for a run similar to
    nothing."""
    if not comparable(profile):
        return {}
    query = (
        select(
            RungVerdict.rung,
            RungVerdict.verdict,
            RungVerdict.effect,
            RUNS.c.id,
            RUNS.c.task,
            RUNS.c.recipe,
            RUNS.c.model_facts,
            RUNS.c.data_facts,
        )
        .join(RUNS, RUNS.c.id == RungVerdict.run_id)
        .where(RUNS.c.task == profile.task)
    )
    if not shared:
        query = query.where(RungVerdict.project_id == project_id)
    past = []
    profiles: dict[int, Profile] = {}
    for rung, verdict, effect, *run in session.connection().execute(query):
        run_id = run[0]
        if run_id not in profiles:
            keys = ("id", "task", "recipe", "model_facts", "data_facts")
            profiles[run_id] = run_profile(dict(zip(keys, run, strict=True)))
        past.append(PastVerdict(rung, verdict, effect, profiles[run_id], run_id))
    return gather(profile, past)


def evidence_source(session: Session, *, shared: bool) -> EvidenceSource:
    """What :func:`assess` asks for a run's evidence: :func:`similar_evidence` on ``session``."""
    return lambda row: similar_evidence(session, run_profile(row), row["project_id"], shared=shared)


def current_assessment(
    session: Session,
    row: RunRow,
    *,
    shared: bool,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run assessed again now, with its lineage's and similar runs' verdicts as they are
    (the run page shows this, so a verification finished since the report counts); not stored.
    ``previous``: the diagnosis of the run's previous look (see :func:`assess`)."""
    history = lineage_history(session, [row["id"], *ancestor_ids(session, row["parent_id"])])
    return assess(row, history, evidence_source(session, shared=shared), previous)


def _check_length(n_epochs: int, max_epochs: int) -> None:
    if n_epochs > max_epochs:
        raise Invalid(f"{n_epochs} epochs is over the limit of {max_epochs}", field="epochs")


def request_fingerprint(body: RunCreate) -> str:
    """SHA-256 of the report as the client sent it: the fields it set (so a field added to the
    schema later, with its default, does not make an old retry differ), as canonical JSON (key
    order and spacing do not count)."""
    sent = body.model_dump(mode="json", exclude_unset=True)
    canonical = json.dumps(sent, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_run_once(
    session: Session,
    project: tuple[int, str],
    body: RunCreate,
    *,
    key: str | None,
    max_epochs: int,
    data_roots: Sequence[Path],
    shared_evidence: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Store a report unless the request that carried the same idempotency ``key`` already
    did (a retry whose first answer was lost): the run, and whether it was created now. The
    key sent with another body is refused (422), as Stripe and the IETF Idempotency-Key draft
    do: answering the first run would tell the client its new report was stored."""
    if key is None:
        run = create_run(
            session,
            project,
            body,
            max_epochs=max_epochs,
            data_roots=data_roots,
            shared_evidence=shared_evidence,
        )
        return run, True
    fingerprint = request_fingerprint(body)
    existing = run_by_key(session, project[0], key)
    if existing is not None:
        return _replayed(existing, key, fingerprint), False
    try:
        run = create_run(
            session,
            project,
            body,
            max_epochs=max_epochs,
            data_roots=data_roots,
            key=key,
            fingerprint=fingerprint,
            shared_evidence=shared_evidence,
        )
        return run, True
    except IntegrityError:
        # The same key, concurrently: the other request stored it first; answer its run.
        session.rollback()
        existing = run_by_key(session, project[0], key)
        if existing is None:
            raise
        return _replayed(existing, key, fingerprint), False


def _replayed(run: dict[str, Any], key: str, fingerprint: str) -> dict[str, Any]:
    """The run ``key`` created, when this request is the one that created it. Runs stored
    before fingerprints were kept have none: their key answers them whatever the body."""
    stored = run["idempotency_fingerprint"]
    if stored is not None and stored != fingerprint:
        raise Invalid(
            f"'{key}' was already used for a different request; a retry must send the same "
            "body, and a new run needs a new key",
            field="idempotency-key",
        )
    return run


def run_by_key(session: Session, project_id: int, key: str) -> dict[str, Any] | None:
    """The run ``key`` created in the project, with the fingerprint of its request."""
    row = (
        session.connection()
        .execute(
            select(*DETAIL_COLUMNS, RUNS.c.idempotency_fingerprint)
            .join_from(RUNS, PROJECTS)
            .where(RUNS.c.project_id == project_id, RUNS.c.idempotency_key == key)
        )
        .mappings()
        .one_or_none()
    )
    return with_tags(session, [row])[0] if row is not None else None


def create_run(
    session: Session,
    project: tuple[int, str],
    body: RunCreate,
    *,
    max_epochs: int,
    data_roots: Sequence[Path] | None = None,
    source: str = "client",
    key: str | None = None,
    fingerprint: str | None = None,
    shared_evidence: bool = False,
) -> dict[str, Any]:
    """Store a report with its assessment; returns the stored row (see :func:`run_payload`).
    The ladder reads the verdicts of similar runs in the project (every project's when
    ``shared_evidence``). ``key`` and ``fingerprint``: the request's idempotency key and
    :func:`request_fingerprint`. ``data_roots``: where the recipe's data must be; None for a
    recipe checked already (a verification's child runs, made from the checked baseline)."""
    _check_length(len(body.epochs), max_epochs)
    if body.recipe is not None and source != "verification":
        # A verification's child runs carry what the worker counted: the server made them.
        check_recipe_agrees(body)
    if data_roots is not None and body.recipe is not None and body.recipe.data is not None:
        check_recipe_data(body.recipe.data, data_roots)
    project_id, project_name = project
    applied = body.applied_rung.value if body.applied_rung else None
    chain: list[int] = []
    if body.parent_id is not None:
        parent = session.execute(
            select(RUNS.c.project_id, RUNS.c.parent_id, RUNS.c.rung).where(
                RUNS.c.id == body.parent_id
            )
        ).one_or_none()
        if parent is None or parent.project_id != project_id:
            raise Invalid(f"unknown run id {body.parent_id}", field="parent_id")
        applied = applied or parent.rung
        chain = [body.parent_id, *ancestor_ids(session, parent.parent_id)]
    metric = body.metric
    try:
        criterion = resolve_criterion(metric.name, metric.higher_is_better) if metric else None
    except ValueError as exc:
        raise Invalid(str(exc), field="metric.higher_is_better") from exc
    history = lineage_history(session, chain)
    if applied:
        history = replace(history, applied=history.applied | {applied})
    now = utcnow()
    row: dict[str, Any] = {
        "project_id": project_id,
        "name": body.name,
        "parent_id": body.parent_id,
        "applied_rung": applied,
        "depth": len(chain),
        "source": source,
        "task": body.recipe.task if body.recipe else body.task,
        "recipe": body.recipe.model_dump(mode="json") if body.recipe else None,
        "trainer": body.trainer.model_dump(mode="json") if body.trainer else None,
        "model_facts": body.model.model_dump(exclude_none=True),
        "data_facts": body.data.model_dump(exclude_none=True),
        "constraints": body.constraints.model_dump(),
        "metric_name": criterion.name if criterion else None,
        "metric_higher_is_better": criterion.higher_is_better if criterion else None,
        "params": body.params,
        "idempotency_key": key,
        "idempotency_fingerprint": fingerprint,
        "epochs": body.model_dump(include={"epochs"})["epochs"],
        "n_epochs": len(body.epochs),
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    row.update(assess(row, history, evidence_source(session, shared=shared_evidence)))
    conn = session.connection()
    row["id"] = run_id = conn.execute(_INSERT_RUN, row).scalar_one()
    if body.tags:
        conn.execute(
            _INSERT_TAGS,
            [{"run_id": run_id, "tag": tag, "position": i} for i, tag in enumerate(body.tags)],
        )
    row["project"] = project_name
    row["tags"] = list(body.tags)
    return row


# A concurrent request changed the run between its read and this write.
_CHANGED = "the run was changed by another request at the same time; retry"


def append_epochs(
    session: Session,
    run: RunRow,
    epochs: list[EpochIn],
    *,
    max_epochs: int,
    shared_evidence: bool = False,
) -> dict[str, Any]:
    """Append epochs and reassess; refuses epochs that do not follow the stored ones."""
    _check_length(run["n_epochs"] + len(epochs), max_epochs)
    stored = run["epochs"]
    try:
        last_step = next((e["step"] for e in reversed(stored) if e.get("step") is not None), None)
        check_epoch_order(epochs, stored[-1]["epoch"] if stored else None, last_step)
        check_metric_present(epochs, run["metric_name"])
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    row = dict(run)
    row["epochs"] = [*stored, *(e.model_dump() for e in epochs)]
    row["n_epochs"] = len(row["epochs"])
    row.update(current_assessment(session, row, shared=shared_evidence, previous=run["diagnosis"]))
    row["version"] = run["version"] + 1
    row["updated_at"] = utcnow()
    # Read-modify-write: a concurrent append changed the version, so this one fails, not wins.
    result = session.connection().execute(
        _UPDATE_ASSESSED, {**row, "run_id": row["id"], "expected_version": run["version"]}
    )
    if result.rowcount != 1:
        raise Conflict(_CHANGED)
    epochs_cache.written(session, row)
    return row


def reassess_runs(
    session: Session, after_id: int, batch: int, *, shared_evidence: bool = False
) -> tuple[int, list[tuple[str, str]]]:
    """Diagnose and recommend again, with the current code, up to ``batch`` runs with ids above
    ``after_id`` (parents come before their children, so lineages read fresh verdicts). Answers
    the last id handled (``after_id`` when none was left) and each run's (old, new) verdict.
    A run appended to meanwhile keeps its own, newer assessment."""
    rows = (
        session.connection()
        .execute(
            select(*DETAIL_COLUMNS)
            .join_from(RUNS, PROJECTS)
            .where(RUNS.c.id > after_id)
            .order_by(RUNS.c.id)
            .limit(batch)
        )
        .mappings()
        .all()
    )
    changes = []
    for run in rows:
        row = _reassessed(session, run, shared_evidence)
        if row is not None:
            changes.append((run["verdict"], row["verdict"]))
    return (rows[-1]["id"] if rows else after_id), changes


def finish_run(session: Session, run: RunRow, *, shared_evidence: bool = False) -> dict[str, Any]:
    """The run's training is over: it is diagnosed whole, every evaluation judged at once, as a
    report of the whole run is, and no longer as the last look of a run in progress, whose
    newly degraded signal waits for a next look that will not come."""
    row = _reassessed(session, run, shared_evidence)
    if row is None:
        raise Conflict(_CHANGED)
    return row


def _reassessed(session: Session, run: RunRow, shared_evidence: bool) -> dict[str, Any] | None:
    """``run`` diagnosed whole and recommended afresh, and stored; None when another request
    changed it meanwhile (its own, newer assessment stands)."""
    row = dict(run)
    row.update(
        current_assessment(session, row, shared=shared_evidence),
        version=run["version"] + 1,
        updated_at=utcnow(),
    )
    result = session.connection().execute(
        _UPDATE_ASSESSED, {**row, "run_id": row["id"], "expected_version": run["version"]}
    )
    return row if result.rowcount == 1 else None


def tags_by_ids(session: Session, ids: Sequence[int]) -> dict[int, list[str]]:
    """Each run's tags in reported order, in one query for all of ``ids``."""
    tags: dict[int, list[str]] = {}
    if ids:
        for run_id, tag in session.connection().execute(_SELECT_TAGS, {"run_ids": list(ids)}):
            tags.setdefault(run_id, []).append(tag)
    return tags


def with_tags(session: Session, rows: Sequence[RunRow]) -> list[dict[str, Any]]:
    """The rows as dicts carrying their ``tags``."""
    tags = tags_by_ids(session, [row["id"] for row in rows])
    return [{**row, "tags": tags.get(row["id"], [])} for row in rows]


def get_run(session: Session, scope: Scope, run_id: int) -> dict[str, Any]:
    return with_tags(session, [_visible(session, scope, run_id, _SELECT_RUN)])[0]


def run_to_append(session: Session, scope: Scope, run_id: int) -> dict[str, Any]:
    """:func:`get_run` for an append: the epochs come from this process's cache when the row is
    still as this process's last append to it left it (:mod:`app.epochs_cache`), else from the
    database."""
    head = _visible(session, scope, run_id, _SELECT_RUN_BUT_EPOCHS)
    epochs = epochs_cache.cached(session, epochs_cache.stamp(head))
    if epochs is None:
        return get_run(session, scope, run_id)
    return with_tags(session, [{**head, "epochs": epochs}])[0]


def _visible(session: Session, scope: Scope, run_id: int, query: Select[Any]) -> RunRow:
    row = session.connection().execute(query, {"run_id": run_id}).mappings().one_or_none()
    if row is None or not scope.visible(row["project_id"]):
        # Another project's run answers exactly like a missing one.
        raise NotFound(f"run {run_id} not found")
    return row


def summary_payload(row: RunRow) -> dict[str, Any]:
    """The :class:`RunSummary` contract as plain data, serialised without a second validation."""
    payload = {column.key: row[column.key] for column in SUMMARY_COLUMNS}
    payload["tags"] = row["tags"]
    return payload


def run_payload(row: RunRow) -> dict[str, Any]:
    """The :class:`RunOut` contract as plain data."""
    metric = (
        {"name": row["metric_name"], "higher_is_better": row["metric_higher_is_better"]}
        if row["metric_name"]
        else None
    )
    return {
        **summary_payload(row),
        "metric": metric,
        "model": row["model_facts"],
        "data": row["data_facts"],
        "constraints": row["constraints"],
        "recipe": row["recipe"],
        "trainer": row["trainer"],
        "params": row["params"],
        "epochs": row["epochs"],
        "diagnosis": row["diagnosis"],
        "recommendation": row["recommendation"],
    }


def encode_cursor(run_id: int) -> str:
    return base64.urlsafe_b64encode(f"r{run_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("r"):
            raise ValueError(raw)
        run_id = int(raw[1:])
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("malformed cursor", field="cursor") from exc
    # Beyond the id column's range: no cursor this service gave out.
    if not 1 <= run_id <= ID_MAX:
        raise Invalid("malformed cursor", field="cursor")
    return run_id


def list_runs(
    session: Session,
    scope: Scope,
    filters: RunFilters,
    *,
    cursor: str | None = None,
    limit: int = 50,
    oldest_first: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; the cursor is the last id seen, so pages stay stable while runs arrive.
    A ``tag`` filter keeps the runs carrying that tag (exact match): a join on the tag's index."""
    query: Select[Any] = (
        select(*SUMMARY_COLUMNS)
        .join_from(RUNS, PROJECTS)
        .order_by(RUNS.c.id.asc() if oldest_first else RUNS.c.id.desc())
    ).limit(limit + 1)
    if not scope.sees_all:
        query = query.where(RUNS.c.project_id == scope.project_id)
    if filters.project is not None:
        query = query.where(PROJECTS.c.name == filters.project)
    if filters.verdict is not None:
        query = query.where(RUNS.c.verdict == filters.verdict)
    if filters.rung is not None:
        query = query.where(RUNS.c.rung == filters.rung)
    if filters.name:
        escaped = filters.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(RUNS.c.name.ilike(f"%{escaped}%", escape="\\"))
    if filters.tag is not None:
        # (run_id, tag) is the key of run_tags: the join yields each run at most once.
        query = query.join(
            RUN_TAGS, and_(RUN_TAGS.c.run_id == RUNS.c.id, RUN_TAGS.c.tag == filters.tag)
        )
    if filters.created_after is not None:
        query = query.where(RUNS.c.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(RUNS.c.created_at < filters.created_before)
    if cursor:
        after = decode_cursor(cursor)
        query = query.where(RUNS.c.id > after if oldest_first else RUNS.c.id < after)
    found = list(session.execute(query).mappings())
    more = len(found) > limit
    rows = with_tags(session, found[:limit])
    return rows, encode_cursor(rows[-1]["id"]) if more and rows else None


def descendant_ids(session: Session, run_id: int) -> list[int]:
    """All runs derived from ``run_id``, breadth-first."""
    found: list[int] = []
    frontier = [run_id]
    while frontier and len(found) < MAX_LINEAGE_DEPTH * 10:
        frontier = list(
            session.scalars(
                select(RUNS.c.id).where(RUNS.c.parent_id.in_(frontier)).order_by(RUNS.c.id)
            )
        )
        found.extend(frontier)
    return found


def summaries_by_ids(session: Session, ids: list[int]) -> list[dict[str, Any]]:
    """Run summaries in the order of ``ids``."""
    if not ids:
        return []
    rows = session.execute(
        select(*SUMMARY_COLUMNS).join_from(RUNS, PROJECTS).where(RUNS.c.id.in_(ids))
    ).mappings()
    by_id = {row["id"]: summary_payload(row) for row in with_tags(session, list(rows))}
    return [by_id[i] for i in ids if i in by_id]


def figures_by_ids(session: Session, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Criterion, best and last validation figure of each run, from its stored diagnosis."""
    if not ids:
        return {}
    rows = session.execute(select(RUNS.c.id, RUNS.c.diagnosis).where(RUNS.c.id.in_(ids)))
    figures = {}
    for run_id, diagnosis in rows:
        evidence = diagnosis.get("evidence", {})
        figures[run_id] = {
            "criterion": evidence.get("criterion"),
            "best": evidence.get("best_value"),
            "last": evidence.get("last_value"),
        }
    return figures
