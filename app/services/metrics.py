"""The figures /metrics reads from the database at each scrape.

The GPU workers are processes of their own, often on other machines, and the API may run as
several processes: only the database knows the totals, so every API process reads them there and
all report the same. Histograms are counted by the database (one ``CASE`` per bucket), so a scrape
costs one scan per figure however long the history is, not a row per job in Python.

The figures cover every project, or one (:class:`Rows`), for a scraper holding a project's token.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
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
from app.models import JobStatus, Run, Trial, TrialStatus, Verification

V = Verification

# Seconds, for waits and trainings alike: from moments on a free GPU to a day in a long queue.
BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0)


# Any select: the filters below keep its columns' types.
Query = TypeVar("Query", bound="Select[*tuple[Any, ...]]")


@dataclass(frozen=True, slots=True)
class Rows:
    """Whose rows the figures count: every project's (``project_id`` None), or one project's:
    its runs, the verifications of its runs, and the trials those verifications trained (a
    trial reused from another project's job stays that project's)."""

    project_id: int | None = None

    def runs(self, query: Query) -> Query:
        return query if self.project_id is None else query.where(Run.project_id == self.project_id)

    def jobs(self, query: Query) -> Query:
        if self.project_id is None:
            return query
        return query.join(Run, Run.id == V.run_id).where(Run.project_id == self.project_id)

    def trials(self, query: Query) -> Query:
        if self.project_id is None:
            return query
        return self.jobs(query.join(V, V.id == Trial.verification_id))


class DatabaseCollector:
    """A prometheus_client collector of what the database holds (for every project, or one:
    ``rows``). It has no ``describe``, so registering it reads nothing; each scrape reads
    everything afresh."""

    def __init__(self, db: Database, rows: Rows | None = None) -> None:
        self.db = db
        self.rows = rows or Rows()

    def collect(self) -> list[Metric]:
        with self.db.sessionmaker() as session:
            return list(figures(session, self.rows))


def figures(session: Session, rows: Rows) -> Iterator[Metric]:
    dialect = session.get_bind().dialect.name
    yield counted(
        session,
        "advisor_runs",
        "Runs in the history, by diagnosis verdict.",
        Run.verdict,
        (v.value for v in Verdict),
        rows.runs,
    )
    yield counted(
        session,
        "advisor_verifications",
        "Verification jobs, by status.",
        V.status,
        JobStatus,
        rows.jobs,
    )
    # created_at comes from the clock of the API process that queued the job, started_at from
    # the database's: a skew between the two shifts every wait by as much.
    yield histogram(
        session,
        "advisor_verification_queue_wait_seconds",
        "From queuing to the latest start, for every verification a worker has started.",
        rows.jobs(select(seconds_between(dialect, V.created_at, V.started_at).label("v"))),
    )
    yield histogram(
        session,
        "advisor_verification_duration_seconds",
        "From the latest start to the end, for every verification that ended after starting.",
        rows.jobs(select(seconds_between(dialect, V.started_at, V.finished_at).label("v"))),
    )
    yield histogram(
        session,
        "advisor_trial_duration_seconds",
        "Training time of each stored trial (one recipe, one seed).",
        rows.trials(select(Trial.duration_s.label("v")).where(Trial.status == TrialStatus.DONE)),
    )
    yield heartbeat_ages(session, dialect, rows)
    yield epochs_per_second(session, dialect, rows)


def seconds_between(
    dialect: str, start: SQLColumnExpression[Any], end: SQLColumnExpression[Any] | None = None
) -> ColumnElement[Any]:
    """``end - start`` in seconds, computed by the database; ``end`` defaults to the database's
    now, the clock the queue keeps leases and heartbeats on (``trials.clock``)."""
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
    kept: Callable[[Select[Any, int]], Select[Any, int]],
) -> GaugeMetricFamily:
    """Rows per value of ``column`` among those ``kept`` keeps, labelled by the column's name;
    ``known`` values are listed at 0 when no row has them, so a series does not vanish when its
    last row changes."""
    counts = dict.fromkeys(map(str, known), 0)
    query = kept(select(column, func.count()).group_by(column))
    counts.update((str(value), n) for value, n in session.execute(query))
    family = GaugeMetricFamily(name, documentation, labels=[column.key])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family


def histogram(
    session: Session, name: str, documentation: str, values: Select[Any]
) -> HistogramMetricFamily:
    """The column ``v`` of ``values`` in :data:`BUCKETS`, over the rows where it is not null.
    The values are materialized first, so that each is computed once, not once per bucket (both
    databases would otherwise copy the expression into every bucket's ``CASE``)."""
    v = values.cte("v").prefix_with("MATERIALIZED").c.v
    query = select(
        *(func.sum(case((v <= bound, 1), else_=0)) for bound in BUCKETS), func.count(v), func.sum(v)
    )
    *cumulative, count, total = session.execute(query).one()
    buckets = [(str(b), float(n or 0)) for b, n in zip(BUCKETS, cumulative, strict=True)]
    return HistogramMetricFamily(
        name, documentation, buckets=[*buckets, ("+Inf", float(count))], sum_value=float(total or 0)
    )


def heartbeat_ages(session: Session, dialect: str, rows: Rows) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "advisor_worker_heartbeat_age_seconds",
        "Seconds since each worker holding a trial last renewed its lease.",
        labels=["worker"],
    )
    # A trial holds a lease exactly while running (every way out of 'running' clears it), so a
    # worker that died stays listed, ageing, until another takes its trial over.
    query = rows.trials(
        select(Trial.lease_owner, func.min(seconds_between(dialect, Trial.heartbeat_at)))
        .where(Trial.lease_owner.is_not(None), Trial.heartbeat_at.is_not(None))
        .group_by(Trial.lease_owner)
    )
    for worker, age in session.execute(query):
        family.add_metric([str(worker)], float(age))
    return family


def epochs_per_second(session: Session, dialect: str, rows: Rows) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "advisor_trial_epochs_per_second",
        "Epochs trained per second of training over all stored trials, by device.",
        labels=["device"],
    )
    query = rows.trials(
        select(
            Trial.device, func.sum(array_length(dialect, Trial.curve)), func.sum(Trial.duration_s)
        )
        .where(Trial.status == TrialStatus.DONE)
        .group_by(Trial.device)
    )
    for device, epochs, seconds in session.execute(query):
        if seconds:
            family.add_metric([device], float(epochs) / float(seconds))
    return family
