"""The figures /metrics reads from the database at each scrape.

The GPU workers are processes of their own, often on other machines, and the API may run as
several processes: only the database knows the totals, so every API process reads them there and
all report the same. Histograms are counted by the database (one ``CASE`` per bucket), so a scrape
costs one scan per figure however long the history is, not a row per job in Python.
"""

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import (
    ColumnElement,
    Float,
    SQLColumnExpression,
    case,
    cast,
    extract,
    func,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.advisor.diagnosis import Verdict
from app.db import Database
from app.models import JobStatus, Run, Trial, Verification

V = Verification

# Seconds, for waits and trainings alike: from moments on a free GPU to a day in a long queue.
BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0)


class DatabaseCollector:
    """A prometheus_client collector of what the database holds. It has no ``describe``, so
    registering it reads nothing; each scrape reads everything afresh."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> list[Metric]:
        with self.db.sessionmaker() as session:
            return list(figures(session))


def figures(session: Session) -> Iterator[Metric]:
    dialect = session.get_bind().dialect.name
    yield counted(
        session,
        "advisor_runs",
        "Runs in the history, by diagnosis verdict.",
        Run.verdict,
        (v.value for v in Verdict),
    )
    yield counted(
        session, "advisor_verifications", "Verification jobs, by status.", V.status, JobStatus
    )
    # created_at comes from the clock of the API process that queued the job, started_at from
    # the database's: a skew between the two shifts every wait by as much.
    yield histogram(
        session,
        "advisor_verification_queue_wait_seconds",
        "From queuing to the latest start, for every verification a worker has started.",
        seconds_between(dialect, V.created_at, V.started_at),
    )
    yield histogram(
        session,
        "advisor_verification_duration_seconds",
        "From the latest start to the end, for every verification that ended after starting.",
        seconds_between(dialect, V.started_at, V.finished_at),
    )
    yield histogram(
        session,
        "advisor_trial_duration_seconds",
        "Training time of each stored trial (one recipe, one seed).",
        Trial.duration_s,
    )
    yield heartbeat_ages(session, dialect)
    yield epochs_per_second(session, dialect)


def seconds_between(
    dialect: str, start: SQLColumnExpression[Any], end: SQLColumnExpression[Any] | None = None
) -> ColumnElement[Any]:
    """``end - start`` in seconds, computed by the database; ``end`` defaults to the database's
    now, the clock the queue keeps leases and heartbeats on (``queue.clock``)."""
    if dialect == "postgresql":
        # As a float: extract() answers numeric, whose arithmetic is many times slower.
        return cast(extract("epoch", (func.now() if end is None else end) - start), Float)
    return (func.julianday("now" if end is None else end) - func.julianday(start)) * 86400.0


def array_length(dialect: str, column: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    """The length of a JSON array column (JSONB on PostgreSQL)."""
    if dialect == "postgresql":
        return func.jsonb_array_length(column)
    return func.json_array_length(column)


def counted(
    session: Session,
    name: str,
    documentation: str,
    column: InstrumentedAttribute[Any],
    known: Iterable[str],
) -> GaugeMetricFamily:
    """Rows per value of ``column``, labelled by the column's name; ``known`` values are listed
    at 0 when no row has them, so a series does not vanish when its last row changes."""
    counts = dict.fromkeys(map(str, known), 0)
    query = select(column, func.count()).group_by(column)
    counts.update((str(value), n) for value, n in session.execute(query))
    family = GaugeMetricFamily(name, documentation, labels=[column.key])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family


def histogram(
    session: Session, name: str, documentation: str, value: SQLColumnExpression[Any]
) -> HistogramMetricFamily:
    """``value`` in :data:`BUCKETS`, over the rows where it is not null. The values are
    materialized first, so that each is computed once, not once per bucket (both databases
    would otherwise copy the expression into every bucket's ``CASE``)."""
    v = select(value.label("v")).cte("v").prefix_with("MATERIALIZED").c.v
    query = select(
        *(func.sum(case((v <= bound, 1), else_=0)) for bound in BUCKETS), func.count(v), func.sum(v)
    )
    *cumulative, count, total = session.execute(query).one()
    buckets = [(str(b), float(n or 0)) for b, n in zip(BUCKETS, cumulative, strict=True)]
    return HistogramMetricFamily(
        name, documentation, buckets=[*buckets, ("+Inf", float(count))], sum_value=float(total or 0)
    )


def heartbeat_ages(session: Session, dialect: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "advisor_worker_heartbeat_age_seconds",
        "Seconds since each worker holding a job last renewed its lease.",
        labels=["worker"],
    )
    # A job holds a lease exactly while running (every way out of 'running' clears it), so a
    # worker that died stays listed, ageing, until another takes its job over.
    query = (
        select(V.lease_owner, func.min(seconds_between(dialect, V.heartbeat_at)))
        .where(V.lease_owner.is_not(None), V.heartbeat_at.is_not(None))
        .group_by(V.lease_owner)
    )
    for worker, age in session.execute(query):
        family.add_metric([str(worker)], float(age))
    return family


def epochs_per_second(session: Session, dialect: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "advisor_trial_epochs_per_second",
        "Epochs trained per second of training over all stored trials, by device.",
        labels=["device"],
    )
    query = select(
        Trial.device, func.sum(array_length(dialect, Trial.curve)), func.sum(Trial.duration_s)
    ).group_by(Trial.device)
    for device, epochs, seconds in session.execute(query):
        if seconds:
            family.add_metric([device], float(epochs) / float(seconds))
    return family
