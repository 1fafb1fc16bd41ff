"""Trials, the unit of work: the queue workers take trainings from, and the service's side of a
verification's protocol (:mod:`app.advisor.protocol` decides, this module stores).

A verification's trials are rows of ``trials``. :func:`advance` asks the protocol what the
verification needs, given what its trials hold, and queues what is missing (a training already
stored under the same recipe fingerprint and seed is reused, by any verification); it runs when a
verification is requested and after every change to one of its trials. A worker whose devices fit
claims the oldest queued trial in one atomic statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
one conditional UPDATE on SQLite) and holds it under a lease that its heartbeats renew; each
heartbeat brings the epochs trained so far, and its answer says whether to stop (a race lane cut
at a checkpoint, a cancelled verification). A trial's effects are written in one transaction that
only its lease holder gets through; a verification's result, rung verdicts and child runs once,
by the status change that ends it. Lease times come from the database's clock, never a worker's.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import wakeup
from app.advisor.protocol import (
    BASELINE,
    CANDIDATE,
    FRACTION,
    FRACTIONS,
    PRUNED,
    Kind,
    Known,
    Spec,
    TrialKey,
    checkpoints,
    learning_curve_seeds,
    metric_value,
    step,
    trial_figures,
)
from app.models import (
    JobStatus,
    Project,
    Run,
    RungVerdict,
    Trial,
    TrialStatus,
    UTCDateTime,
    Verification,
)
from app.schemas import RunCreate
from app.services.errors import Conflict, Invalid, NotFound
from app.services.projects import Scope
from app.services.runs import create_run, get_run
from app.services.trainings import (
    BUILDER,
    SCRIPT,
    Measure,
    Runner,
    Script,
    Training,
    measure_of,
    runner_of,
    training_of,
)

log = logging.getLogger("advisor.trials")

T, V = Trial, Verification
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
EVERYONE = Scope(0, "", sees_all=True)


def clock(session: Session, seconds: float = 0.0) -> Any:
    """The database's time ``seconds`` from now, as SQL: leases never depend on the clock of
    the machine a worker runs on, so workers whose clocks differ agree on who holds a trial."""
    if session.get_bind().dialect.name == "postgresql":
        return func.now() + timedelta(seconds=seconds)
    # SQLite: UTC to the millisecond, in the text form the column type reads back.
    shift = f"{seconds:+.3f} seconds"
    return func.strftime("%Y-%m-%d %H:%M:%f000", "now", shift, type_=UTCDateTime())


class LeaseLost(Conflict):
    """The trial is not (or no longer) held by the worker that spoke: another took it over
    after its lease ran out, or it ended. Nothing the worker sent is stored."""


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to train a trial, and nothing of the run it verifies beyond, for a
    script's trial, the run's name and the settings its script reads."""

    id: int
    verification_id: int
    role: str
    rung: str
    seed: int
    recipe: dict[str, Any]
    epochs: int
    device: str
    gpus: int
    attempt: int
    lease_s: float
    runner: Runner = BUILDER
    settings: dict[str, Any] | None = None
    change: dict[str, Any] | None = None
    run_name: str | None = None
    metric: str | None = None


# --- the worker's side -------------------------------------------------------------------------


def wait_for_work(timeout: float) -> None:
    """Return when a trial is queued by this process, or after ``timeout``: a claim's long
    poll waits here between two looks at the queue."""
    wakeup.wait_for_work(timeout)


def _runnable(now: Any) -> Any:
    return and_(
        T.attempts < T.max_attempts,
        T.stop_requested.is_(False),
        or_(
            T.status == TrialStatus.QUEUED,
            and_(T.status == TrialStatus.RUNNING, T.lease_expires_at < now),
        ),
    )


def claim(
    session: Session,
    worker: str,
    *,
    devices: int,
    lease_s: float,
    scope: Scope = EVERYONE,
    runner: Runner = BUILDER,
    project: str | None = None,
) -> Claimed | None:
    """Take the oldest runnable trial of an active verification whose devices fit (a trial that
    wants more waits for a worker that has them), for ``worker``; None when there is none. A
    project's worker (``scope``) sees only that project's trials, and ``project`` narrows any
    worker to one project. A builder worker takes builder trials only, an agent (``runner``
    script) its scripts' only: neither can train the other's."""
    _expire_exhausted(session)
    now = clock(session)
    fits = and_(
        _runnable(now),
        T.gpus <= devices,
        T.runner == runner,
        V.status.in_(ACTIVE),
        V.cancel_requested.is_(False),
    )
    oldest = select(T.id).join(V, V.id == T.verification_id).where(fits)
    if not scope.sees_all or project is not None:
        oldest = oldest.join(Run, Run.id == V.run_id)
    if not scope.sees_all:
        oldest = oldest.where(Run.project_id == scope.project_id)
    if project is not None:
        oldest = oldest.join(Project, Project.id == Run.project_id).where(Project.name == project)
    oldest = oldest.order_by(T.created_at, T.id).limit(1)
    claimed = {
        "status": TrialStatus.RUNNING,
        "lease_owner": worker,
        "worker": worker,
        "lease_expires_at": clock(session, lease_s),
        "heartbeat_at": now,
        "started_at": now,
        "attempts": T.attempts + 1,
        "curve": [],  # a takeover starts the training again
        "stop_requested": False,
    }
    if session.get_bind().dialect.name == "postgresql":
        trial_id = session.scalar(oldest.with_for_update(of=T, skip_locked=True))
        if trial_id is None:
            return None
        session.execute(update(T).where(T.id == trial_id).values(**claimed))
    else:
        # One statement, and the condition is checked again by the writer that wins.
        trial_id = session.scalar(
            update(T)
            .where(T.id == oldest.scalar_subquery(), _runnable(now))
            .values(**claimed)
            .returning(T.id)
        )
        if trial_id is None:
            return None
    row = session.get(T, trial_id)
    assert row is not None
    session.refresh(row)
    session.execute(
        update(V)
        .where(V.id == row.verification_id, V.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING, started_at=now)
    )
    training = training_of(row.recipe)
    script: dict[str, Any] = (
        {
            "settings": training.settings,
            "change": training.change,
            "run_name": training.run_name,
            "metric": training.metric,
        }
        if isinstance(training, Script)
        else {}
    )
    return Claimed(
        id=row.id,
        verification_id=row.verification_id or 0,
        role=row.role,
        rung=row.rung,
        seed=row.seed,
        recipe=row.recipe,
        epochs=training.epochs,
        device=row.wants_device,
        gpus=row.gpus,
        attempt=row.attempts,
        lease_s=lease_s,
        runner=runner_of(row.recipe),
        **script,
    )


def _held(session: Session, trial_id: int, worker: str, scope: Scope) -> Trial:
    """The trial while ``worker`` holds it (locked on PostgreSQL); else :class:`LeaseLost`, or
    :class:`NotFound` for a trial this worker may not see."""
    query = select(T).where(T.id == trial_id)
    if not scope.sees_all:
        query = (
            query.join(V, V.id == T.verification_id)
            .join(Run, Run.id == V.run_id)
            .where(Run.project_id == scope.project_id)
        )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=T)
    row = session.scalar(query)
    if row is None:
        raise NotFound(f"trial {trial_id} not found")
    expired = session.scalar(select(T.lease_expires_at < clock(session)).where(T.id == trial_id))
    if row.status != TrialStatus.RUNNING or row.lease_owner != worker or expired:
        raise LeaseLost(f"trial {trial_id} is not held by {worker}: its lease ran out or it ended")
    return row


def check_curve(row: Trial, curve: Sequence[Mapping[str, Any]]) -> None:
    """A curve a worker sends must be this trial's training: one record per epoch from epoch 0,
    each with the metric a verification compares; a builder trial's also with its training loss,
    and no more epochs than its recipe trains (a user's script decides how many evaluations it
    reports). Else :class:`Invalid` (422), naming the field."""
    training = training_of(row.recipe)
    metric = measure_of(training).name
    builder = not isinstance(training, Script)
    if builder and len(curve) > training.epochs:
        raise Invalid(
            f"{len(curve)} epochs, more than the {training.epochs} trial {row.id} trains",
            field="curve",
        )
    for i, record in enumerate(curve):
        if record.get("epoch") != i:
            raise Invalid(
                f"epoch {record.get('epoch')} where the trial's epoch {i} belongs (a trial's "
                "curve has one record per epoch, from 0)",
                field=f"curve[{i}].epoch",
            )
        if builder and record.get("train_loss") is None:
            raise Invalid(
                "a trial's epochs carry their training loss", field=f"curve[{i}].train_loss"
            )
        if metric != "valid_loss" and metric not in (record.get("metrics") or {}):
            raise Invalid(
                f"the trial's metric '{metric}' is missing", field=f"curve[{i}].metrics.{metric}"
            )


def heartbeat(
    session: Session,
    trial_id: int,
    worker: str,
    *,
    lease_s: float,
    curve: Sequence[Mapping[str, Any]] | None = None,
    scope: Scope = EVERYONE,
) -> bool:
    """Renew the lease and store the epochs trained so far; whether the worker is to stop (its
    race lane was cut at a checkpoint, or the verification was cancelled)."""
    row = _held(session, trial_id, worker, scope)
    if curve is not None:
        check_curve(row, curve)
    values: dict[str, Any] = {
        "lease_expires_at": clock(session, lease_s),
        "heartbeat_at": clock(session),
    }
    if curve is not None:
        values["curve"] = [dict(e) for e in curve]
    session.execute(update(T).where(T.id == trial_id).values(**values))
    if curve is not None and row.verification_id is not None:
        advance(session, row.verification_id)
    session.refresh(row)
    job = session.get(V, row.verification_id) if row.verification_id else None
    return row.stop_requested or job is None or job.cancel_requested or job.status.finished


def complete(
    session: Session,
    trial_id: int,
    worker: str,
    *,
    curve: Sequence[Mapping[str, Any]],
    n_train: int | None,
    n_classes: int | None,
    duration_s: float,
    device: str,
    n_skipped: int = 0,
    skipped: Sequence[str] = (),
    scope: Scope = EVERYONE,
) -> None:
    """Store what the worker trained, in one transaction with the protocol's next step. A
    training stopped before its last epoch is kept only as a race lane cut at a checkpoint
    (under that checkpoint's fingerprint); otherwise it was stopped for nothing worth keeping
    (a cancelled verification) and the trial goes back to the queue. A script that ended on its
    own is done however many evaluations it reported (it may stop early by its own rule)."""
    row = _held(session, trial_id, worker, scope)
    check_curve(row, curve)
    training = training_of(row.recipe)
    records = [dict(e) for e in curve]
    handed = _Handed(n_train, n_classes, duration_s, device, n_skipped, tuple(skipped))
    if len(records) == training.epochs or (isinstance(training, Script) and not row.stop_requested):
        _store(session, row, records, training, handed)
    elif (cut := _cut_of(session, row)) is not None and len(records) >= cut:
        _keep_cut(session, row, records[:cut], training, cut, handed)
    else:
        _requeue(session, trial_id, counted=False)
    if row.verification_id is not None:
        advance(session, row.verification_id)


def fail(
    session: Session,
    trial_id: int,
    worker: str,
    *,
    error: str,
    final: bool = False,
    scope: Scope = EVERYONE,
) -> None:
    """A failed attempt: queued again while attempts remain, unless ``final`` (bad input that
    no retry can fix); a trial out of attempts fails its verification."""
    row = _held(session, trial_id, worker, scope)
    if final or row.attempts >= row.max_attempts:
        _give_up(session, row, error)
    else:
        _requeue(session, trial_id, counted=True, error=error)


def release(session: Session, trial_id: int, worker: str, *, scope: Scope = EVERYONE) -> None:
    """Hand the trial back untouched (the worker is shutting down): the attempt does not count."""
    _held(session, trial_id, worker, scope)
    _requeue(session, trial_id, counted=False)


def _requeue(session: Session, trial_id: int, *, counted: bool, error: str | None = None) -> None:
    """Queued again, to be trained afresh (nothing of the attempt is kept); cancelled instead
    when its verification has ended meanwhile, as its queued trials were (nothing would claim
    it)."""
    owner = session.scalar(select(T.verification_id).where(T.id == trial_id))
    values: dict[str, Any] = {
        "status": TrialStatus.QUEUED if _active(session, owner) else TrialStatus.CANCELLED,
        "lease_owner": None,
        "lease_expires_at": None,
        "curve": [],
        "stop_requested": False,
    }
    if not counted:
        values["attempts"] = T.attempts - 1
    if error is not None:
        values["error"] = error
    session.execute(update(T).where(T.id == trial_id).values(**values))
    wakeup.announce(session)


def _give_up(session: Session, row: Trial, error: str) -> None:
    session.execute(
        update(T)
        .where(T.id == row.id)
        .values(
            status=TrialStatus.FAILED,
            lease_owner=None,
            lease_expires_at=None,
            finished_at=clock(session),
            error=error,
        )
    )
    if row.verification_id is not None:
        what = f"{row.role} {row.rung}".strip()
        _end(
            session,
            row.verification_id,
            JobStatus.FAILED,
            error=f"trial {row.id} ({what}, seed {row.seed}) failed: {error}",
        )


def _expire_exhausted(session: Session) -> None:
    """Trials whose last lease ran out with no attempts left fail, and their verifications."""
    lost = session.scalars(
        select(T).where(
            T.status == TrialStatus.RUNNING,
            T.lease_expires_at < clock(session),
            T.attempts >= T.max_attempts,
        )
    ).all()
    for row in lost:
        _give_up(session, row, "the worker training it stopped answering, on every attempt")


@dataclass(frozen=True)
class _Handed:
    """What a worker hands in besides the curve."""

    n_train: int | None
    n_classes: int | None
    duration_s: float
    device: str
    n_skipped: int = 0  # bad data files skipped (skip_bad), and the first of them
    skipped: tuple[str, ...] = ()


def _store(
    session: Session, row: Trial, curve: list[dict[str, Any]], training: Training, handed: _Handed
) -> None:
    """The trial done, with its curve, the figures read from it, and no lease any more."""
    figures: dict[str, Any] = trial_figures(curve, *measure_of(training))
    if handed.n_train is not None:
        figures["n_train"] = handed.n_train
    if handed.n_skipped:
        figures["skipped_bad"] = handed.n_skipped
        figures["skipped_files"] = list(handed.skipped)
    if handed.n_classes is not None:
        figures["n_classes"] = handed.n_classes
    session.execute(
        update(T)
        .where(T.id == row.id)
        .values(
            status=TrialStatus.DONE,
            curve=curve,
            figures=figures,
            duration_s=handed.duration_s,
            device=handed.device,
            error=None,
            lease_owner=None,
            lease_expires_at=None,
            finished_at=clock(session),
        )
    )


def _cut_of(session: Session, row: Trial) -> int | None:
    """The checkpoint at which this trial's race lane was cut, if it was."""
    if row.verification_id is None or row.role != CANDIDATE:
        return None
    job = session.get(V, row.verification_id)
    cut = ((job.budget or {}).get("cuts") or {}).get(row.rung) if job else None
    return int(cut["epoch"]) if cut else None


def _keep_cut(
    session: Session,
    row: Trial,
    curve: list[dict[str, Any]],
    training: Training,
    cut: int,
    handed: _Handed,
) -> None:
    """A lane cut at a checkpoint is kept under that checkpoint's fingerprint (a race that
    goes further trains it afresh), unless another race stored the same stop first."""
    stopped = training.fingerprint(stopped_at=cut)
    if session.scalar(select(T.id).where(T.recipe_fingerprint == stopped, T.seed == row.seed)):
        session.execute(delete(T).where(T.id == row.id))
        return
    session.execute(update(T).where(T.id == row.id).values(recipe_fingerprint=stopped, role=PRUNED))
    _store(session, row, curve, training, handed)


# --- the protocol's side -----------------------------------------------------------------------


def protocol_of(job: Verification) -> dict[str, Any]:
    """The seeds and criterion a job was asked with; jobs queued before they existed ran a
    fixed number of seeds judged on the final epoch."""
    n = len(job.seeds)
    old = {"min_seeds": n, "max_seeds": n, "criterion": "final", "smallest_effect": 0.0}
    return {**old, "race": False, **(job.budget or {}).get("protocol", {})}


def candidates_of(job: Verification) -> dict[str, Any]:
    """The job's candidate recipes by rung, in the order asked."""
    pairs = (job.budget or {}).get("candidates")
    if pairs is not None:
        return dict(pairs)
    return {job.rung: job.candidate_recipe} if job.candidate_recipe else {}


def spec_of(job: Verification) -> Spec:
    protocol = protocol_of(job)
    rungs = tuple(candidates_of(job))
    kind: Kind = "learning_curve" if not rungs else "race" if protocol["race"] else "adaptive"
    baseline = baseline_of(job)
    return Spec(
        kind=kind,
        seeds=tuple(job.seeds),
        min_seeds=int(protocol["min_seeds"]),
        max_seeds=int(protocol["max_seeds"]),
        criterion="final" if protocol["criterion"] == "final" else "best",
        smallest_effect=float(protocol["smallest_effect"]),
        epochs=baseline.epochs,
        rungs=rungs,
    )


def baseline_of(job: Verification) -> Training:
    return training_of(job.budget["baseline_recipe"])


def measure_of_job(job: Verification) -> Measure:
    return measure_of(baseline_of(job))


def recipe_of(job: Verification, key: TrialKey) -> Training:
    baseline = baseline_of(job)
    if key.role == CANDIDATE:
        return training_of(candidates_of(job)[key.rung])
    if key.role == FRACTION:
        return baseline.changed({"data_fraction": key.fraction * baseline.data_fraction})
    return baseline


def _every_key(spec: Spec) -> list[TrialKey]:
    if spec.kind == "learning_curve":
        return [
            TrialKey(FRACTION, s, fraction=f) for s in learning_curve_seeds(spec) for f in FRACTIONS
        ]
    seeds = spec.seeds if spec.kind == "race" else spec.seeds[: spec.max_seeds]
    return [TrialKey(BASELINE, s) for s in seeds] + [
        TrialKey(CANDIDATE, s, rung) for rung in spec.rungs for s in seeds
    ]


def _signed(curve: Sequence[Mapping[str, Any]], measure: Measure) -> tuple[float, ...]:
    sign = 1.0 if measure.higher_is_better else -1.0
    return tuple(sign * metric_value(e, measure.name) for e in curve)


def _known(row: Trial, measure: Measure, epochs: int) -> Known | None:
    metrics = _signed(row.curve, measure)
    if row.status == TrialStatus.DONE:
        # A script's training is whole however many evaluations it made (it decides).
        whole = len(row.curve) >= epochs or row.runner == SCRIPT
        stopped = None if whole else len(row.curve)
        return Known(metrics, row.figures, stopped)
    if row.status in (TrialStatus.QUEUED, TrialStatus.RUNNING):
        return Known(metrics)
    return None


@dataclass
class _Trials:
    """A verification's trials as the protocol sees them, and the rows behind them."""

    known: dict[TrialKey, Known]
    rows: dict[TrialKey, Trial]  # the whole training's row (queued, running or done)
    stops: dict[TrialKey, Trial]  # a lane's row stored stopped at a checkpoint


def gather(session: Session, job: Verification, spec: Spec) -> _Trials:
    keys = _every_key(spec)
    recipes = {key: recipe_of(job, key) for key in keys}
    wanted: dict[tuple[str, int], tuple[TrialKey, int | None]] = {}
    for key, recipe in recipes.items():
        wanted[(recipe.fingerprint(), key.seed)] = (key, None)
        if spec.kind == "race" and key.role == CANDIDATE:
            for at in checkpoints(spec.epochs):
                wanted[(recipe.fingerprint(stopped_at=at), key.seed)] = (key, at)
    prints = {fingerprint for fingerprint, _ in wanted}
    found = session.scalars(select(T).where(T.recipe_fingerprint.in_(prints))).all()
    measure = measure_of_job(job)
    out = _Trials({}, {}, {})
    for row in found:
        hit = wanted.get((row.recipe_fingerprint, row.seed))
        if hit is None:
            continue
        key, stop = hit
        if stop is None:
            out.rows[key] = row
        elif row.status == TrialStatus.DONE and len(row.curve) > len(
            out.stops[key].curve if key in out.stops else ()
        ):
            out.stops[key] = row  # the longest stored stop
    for key in keys:
        whole = out.rows.get(key)
        seen = _known(whole, measure, spec.epochs) if whole is not None else None
        stopped = out.stops.get(key)
        # A stored stop stands in while the whole training is not further along.
        if stopped is not None and (
            seen is None or (not seen.finished and len(seen.metrics) < len(stopped.curve))
        ):
            seen = Known(
                _signed(stopped.curve, measure),
                stopped.figures,
                len(stopped.curve),
            )
        if seen is not None:
            out.known[key] = seen
    return out


def advance(session: Session, verification_id: int) -> None:
    """Take the verification one step: queue what its protocol needs, stop the race lanes it
    cut, and end it once the result is in (or it was cancelled)."""
    query = select(V).where(V.id == verification_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    job = session.scalar(query)
    if job is None or job.status.finished:
        return
    if job.cancel_requested:
        _end(session, job.id, JobStatus.CANCELLED)
        return
    spec = spec_of(job)
    trials = gather(session, job, spec)
    decided = step(spec, trials.known)
    queued = False
    for key in decided.wanted:
        queued |= _ensure(session, job, key, trials.rows.get(key), trials.known.get(key))
    if decided.cuts:
        _cut(session, job, decided.cuts, trials)
    if queued:
        wakeup.announce(session)
    _progress(session, job, decided.wanted, trials)
    if decided.result is not None:
        _succeed(session, job, spec, decided.result, trials)


def advance_stalled(session: Session) -> None:
    """Advance the verifications that have nothing of their own queued or running. Such a one
    waits on trainings another verification queued (trials are shared by fingerprint and seed),
    and a trial's changes advance only the verification that queued it; so waiting ones are
    advanced here, whenever a worker looks for work. In id order, as every sweep takes them."""
    busy = select(T.verification_id).where(
        T.status.in_((TrialStatus.QUEUED, TrialStatus.RUNNING)), T.verification_id.is_not(None)
    )
    waiting = session.scalars(
        select(V.id).where(V.status.in_(ACTIVE), V.id.not_in(busy)).order_by(V.id)
    ).all()
    for verification_id in waiting:
        advance(session, verification_id)


def _ensure(
    session: Session, job: Verification, key: TrialKey, row: Trial | None, known: Known | None
) -> bool:
    """A trial the protocol needs: known already, or queued now. True when queued now."""
    if known is not None and (known.finished or row is None):
        return False  # finished, or a stored stop standing in while nothing trains it
    if row is not None and row.status in (TrialStatus.QUEUED, TrialStatus.RUNNING):
        if row.verification_id != job.id and not _active(session, row.verification_id):
            # Queued by a verification that ended since: this one takes it over.
            session.execute(update(T).where(T.id == row.id).values(verification_id=job.id))
            return True
        return False
    recipe = recipe_of(job, key)
    if row is not None:  # failed or cancelled before: another try
        session.execute(
            update(T)
            .where(T.id == row.id)
            .values(
                status=TrialStatus.QUEUED,
                verification_id=job.id,
                attempts=0,
                max_attempts=job.max_attempts,
                curve=[],
                error=None,
                stop_requested=False,
                wants_device=job.device,
                gpus=job.gpus,
            )
        )
        return True
    fresh = Trial(
        verification_id=job.id,
        role=key.role if key.role != FRACTION else key.label,
        rung=key.rung,
        recipe_fingerprint=recipe.fingerprint(),
        seed=key.seed,
        recipe=recipe.model_dump(mode="json"),
        runner=runner_of(recipe.model_dump(mode="json")),
        status=TrialStatus.QUEUED,
        wants_device=job.device,
        gpus=job.gpus,
        max_attempts=job.max_attempts,
    )
    try:
        with session.begin_nested():
            session.add(fresh)
    except IntegrityError:
        # Another verification queued the same training at the same moment: it is shared.
        return False
    return True


def _active(session: Session, verification_id: int | None) -> bool:
    if verification_id is None:
        return False
    job = session.get(V, verification_id)
    return job is not None and job.status in ACTIVE and not job.cancel_requested


def _cut(session: Session, job: Verification, cuts: Mapping[str, Any], trials: _Trials) -> None:
    """Record the cuts, and stop the unfinished trainings of the lanes they cut."""
    recorded = dict((job.budget or {}).get("cuts") or {})
    for rung, cut in cuts.items():
        recorded.setdefault(rung, {"epoch": cut.epoch, "reason": cut.reason, "score": cut.score})
        for key, row in trials.rows.items():
            if key.rung != rung or key.role != CANDIDATE:
                continue
            if row.status == TrialStatus.RUNNING:
                session.execute(update(T).where(T.id == row.id).values(stop_requested=True))
            elif row.status == TrialStatus.QUEUED:
                session.execute(
                    update(T).where(T.id == row.id).values(status=TrialStatus.CANCELLED)
                )
    session.execute(update(V).where(V.id == job.id).values(budget={**job.budget, "cuts": recorded}))


def _progress(
    session: Session, job: Verification, wanted: Sequence[TrialKey], trials: _Trials
) -> None:
    rows = [trials.rows[k] for k in wanted if k in trials.rows]
    epochs = int(job.budget["baseline_recipe"]["epochs"])
    done = sum(r.status == TrialStatus.DONE for r in rows)
    running = sum(r.status == TrialStatus.RUNNING for r in rows)
    progress = {
        "attempts": max((r.attempts for r in rows), default=0),
        "trials": len(wanted),
        "trials_done": done,
        "trials_running": running,
        "trials_queued": len(wanted) - done - running,
        "epochs_done": sum(min(len(r.curve), epochs) for r in rows),
        "epochs_total": len(wanted) * epochs,
    }
    session.execute(update(V).where(V.id == job.id).values(progress=progress))


def _end(
    session: Session, verification_id: int, status: JobStatus, error: str | None = None
) -> None:
    """A verification that ends without a result: its queued trials go, its running ones are
    told to stop at their next heartbeat."""
    ended = session.execute(
        update(V)
        .where(V.id == verification_id, V.status.in_(ACTIVE))
        .values(status=status, error=error, finished_at=clock(session))
        .returning(V.id)
    ).first()
    if ended is None:
        return
    session.execute(
        update(T)
        .where(T.verification_id == verification_id, T.status == TrialStatus.QUEUED)
        .values(status=TrialStatus.CANCELLED)
    )
    session.execute(
        update(T)
        .where(T.verification_id == verification_id, T.status == TrialStatus.RUNNING)
        .values(stop_requested=True)
    )


def _succeed(
    session: Session,
    job: Verification,
    spec: Spec,
    result: dict[str, Any],
    trials: _Trials,
) -> None:
    """The result, its rung verdicts and the candidates' child runs, written once: by the
    status change that ends the verification."""
    ended = session.execute(
        update(V)
        .where(V.id == job.id, V.status.in_(ACTIVE))
        .values(
            status=JobStatus.SUCCEEDED,
            verdict=result.get("verdict"),
            effect=result.get("effect"),
            error=None,
            finished_at=clock(session),
        )
        .returning(V.id)
    ).first()
    if ended is None:
        return
    # Trials trained beyond the decision (pairs after the deciding one) keep for reuse; those
    # still queued for this verification are not needed any more.
    session.execute(
        update(T)
        .where(T.verification_id == job.id, T.status == TrialStatus.QUEUED)
        .values(status=TrialStatus.CANCELLED)
    )
    by_line = {**trials.rows, **{k: v for k, v in trials.stops.items() if k not in trials.rows}}
    used = [row for row in by_line.values() if row.status == TrialStatus.DONE]
    mine = [row for row in used if row.verification_id == job.id]
    for line in result.get("per_seed", []):
        key = _line_key(line)
        row = trials.rows.get(key) if line["role"] != PRUNED else trials.stops.get(key)
        if row is None or row.status != TrialStatus.DONE:
            row = trials.rows.get(key) or trials.stops.get(key)
        line["reused"] = row is None or row.verification_id != job.id
        if row is not None:
            line["trial_id"] = row.id
    for entry in result.get("rungs", []):
        entry["epochs_trained"] = sum(
            len(row.curve) for row in mine if row.rung == entry["rung"] and row.role != BASELINE
        )
    metric = measure_of_job(job).name
    stored = {
        "metric": metric,
        "criterion": spec.criterion,
        "criterion_text": f"{spec.criterion}-epoch validation {metric}",
        "smallest_effect": spec.smallest_effect,
        **result,
        "trainings": len(result.get("per_seed", [])),
        "trials_trained": len(mine),
        "trials_reused": len(result.get("per_seed", [])) - len(mine),
        "epochs_trained": sum(len(row.curve) for row in mine),
    }
    skipping = [line for line in result.get("per_seed", []) if line.get("skipped_bad")]
    if skipping:
        # Every training of a verification reads the same data: it says so once.
        most = max(skipping, key=lambda line: line["skipped_bad"])
        stored["skipped_bad"] = most["skipped_bad"]
        stored["skipped_reason"] = (
            f"{most['skipped_bad']} bad data file(s) were skipped (skip_bad), e.g. "
            + "; ".join(most["skipped_files"][:3])
        )
    # The judged candidates only: a lane cut at a checkpoint is not judged, even when a worker
    # had trained it to the end before the cut was decided.
    judged = [
        (key, trials.rows[key])
        for key in (
            _line_key(line) for line in result.get("per_seed", []) if line["role"] == CANDIDATE
        )
        if key in trials.rows
    ]
    made = _children(session, job, judged)
    for entry in stored.get("rungs", []):
        entry["child_runs"] = made.get(entry["rung"], [])
    stored["child_runs"] = [i for entry in stored.get("rungs", []) for i in entry["child_runs"]]
    session.execute(update(V).where(V.id == job.id).values(result=stored))
    run = session.get(Run, job.run_id)
    assert run is not None
    session.add_all(
        RungVerdict(
            verification_id=job.id,
            run_id=job.run_id,
            project_id=run.project_id,
            rung=judged["rung"],
            verdict=judged["verdict"],
            effect=judged.get("effect"),
        )
        for judged in stored.get("rungs", [])
        if judged.get("verdict")
    )


def _line_key(line: Mapping[str, Any]) -> TrialKey:
    role = str(line["role"])
    if role.startswith(FRACTION):
        return TrialKey(FRACTION, int(line["seed"]), fraction=float(role.split(" ")[1]))
    if role == BASELINE:
        return TrialKey(BASELINE, int(line["seed"]))
    return TrialKey(CANDIDATE, int(line["seed"]), str(line.get("rung", "")))


def _children(
    session: Session, job: Verification, judged: Sequence[tuple[TrialKey, Trial]]
) -> dict[str, list[int]]:
    """Each judged candidate training as a run derived from the verified one, by rung."""
    if not judged:
        return {}
    run = get_run(session, EVERYONE, job.run_id)
    project = session.execute(
        select(Project.id, Project.name).where(Project.id == run["project_id"])
    ).one()
    measure = measure_of_job(job)
    name = run["name"] or f"run {job.run_id}"
    facts = {
        key: run["data_facts"].get(key)
        for key in ("more_data_available", "n_classes", "modality")
        if run["data_facts"].get(key) is not None
    }
    made: dict[str, list[int]] = {}
    for key, row in judged:
        training = training_of(row.recipe)
        # A script's child is the same script with the candidate's settings; a builder's, the
        # candidate's recipe.
        made_by = (
            {
                "trainer": {**(run["trainer"] or {}), "settings": training.settings},
                "model": {**run["model_facts"], **_arch_of(training.settings)},
                "task": run["task"],
            }
            if isinstance(training, Script)
            else {"recipe": row.recipe}
        )
        body = RunCreate.model_validate(
            {
                "name": f"{name} + {key.rung} (seed {key.seed})"[:200],
                "parent_id": job.run_id,
                "applied_rung": key.rung,
                **made_by,
                "metric": {"name": measure.name, "higher_is_better": measure.higher_is_better},
                # A script's evaluation may have no training loss (stored without the key).
                "epochs": [{"train_loss": None, **e} for e in row.curve],
                "data": {**facts, "n_train": row.figures.get("n_train")},
                "constraints": run["constraints"],
                "params": run["params"],
                "tags": run["tags"],
            }
        )
        child = create_run(
            session, (project.id, project.name), body, max_epochs=100_000, source="verification"
        )
        made.setdefault(key.rung, []).append(child["id"])
    return made


def _arch_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    arch = settings.get("arch")
    return {"arch": arch} if isinstance(arch, str) else {}


# --- what a verification's page and API show ---------------------------------------------------


def of_verification(session: Session, job: Verification) -> list[dict[str, Any]]:
    """The trials a verification queued and those it reused (trained for another one), in the
    order they were queued, shaped as ``TrialOut``. A finished verification names the trials it
    used in its result; while it runs, the reused ones are those its protocol wants now (a
    baseline trained by an earlier verification shows up at once, not at the end)."""
    used = {
        int(line["trial_id"])
        for line in (job.result or {}).get("per_seed", [])
        if line.get("trial_id") is not None
    }
    if not job.status.finished:
        spec = spec_of(job)
        trials = gather(session, job, spec)
        for key in step(spec, trials.known).wanted:
            whole, stopped = trials.rows.get(key), trials.stops.get(key)
            if whole is not None:
                used.add(whole.id)
            if stopped is not None and (whole is None or whole.status != TrialStatus.DONE):
                used.add(stopped.id)  # a stored race stop stands in for the lane
    rows = session.scalars(
        select(T).where(or_(T.verification_id == job.id, T.id.in_(used))).order_by(T.id)
    ).all()
    return [_shown(row, reused=row.verification_id != job.id) for row in rows]


def _shown(row: Trial, *, reused: bool) -> dict[str, Any]:
    done = row.status == TrialStatus.DONE
    # A trial queued again (a failed attempt, a training retried) keeps its last attempt's
    # worker and times in its row; they are not this attempt's.
    queued = row.status == TrialStatus.QUEUED
    live = queued or row.status == TrialStatus.RUNNING
    return {
        "id": row.id,
        "verification_id": row.verification_id,
        "role": row.role,
        "rung": row.rung,
        "seed": row.seed,
        "status": row.status,
        "reused": reused,
        "worker": None if queued else row.worker,
        # The device is stored when the trial is handed in; before that only the worker is known.
        "device": row.device if done else None,
        "gpus": row.gpus,
        "attempts": row.attempts,
        "epochs": int(row.recipe.get("epochs", 0)),
        "epochs_done": len(row.curve),
        "stop_requested": row.stop_requested,
        "created_at": row.created_at,
        "started_at": None if queued else row.started_at,
        "finished_at": None if live else row.finished_at,
        "duration_s": row.duration_s if done else None,
        "curve": row.curve,
        "figures": row.figures,
        "error": row.error,
    }
