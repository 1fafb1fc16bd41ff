"""ORM tables. Alembic (``migrations/``) owns the schema; these classes must match it, which a
test checks with an autogenerate comparison on SQLite and PostgreSQL."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


# Stored as these strings in ``verifications.status``: the enum changes no schema.
class JobStatus(StrEnum):
    """A verification job's state: queued, running, then succeeded, failed or cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobStatusType(TypeDecorator[JobStatus]):
    """The status column: the enum's strings in a String(16), read back as the enum (a plain
    String would hand back ``str``, which has no ``finished``); an unknown string is refused."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else JobStatus(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> JobStatus | None:
        return None if value is None else JobStatus(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use UTC-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tokens: Mapped[list["ApiToken"]] = relationship(back_populates="project")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    # SHA-256 of a 256-bit random token: a fast hash is enough for a secret with that entropy.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    project: Mapped[Project] = relationship(back_populates="tokens")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_project_id_id", "project_id", "id"),
        Index("ix_runs_verdict", "verdict"),
        Index("ix_runs_rung", "rung"),
        Index("ix_runs_created_at", "created_at"),
        Index("ux_runs_project_id_idempotency_key", "project_id", "idempotency_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True, default=None
    )
    applied_rung: Mapped[str | None] = mapped_column(String(32), default=None)
    # How many ancestors: stored, so the history page need not walk lineages per row.
    depth: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    source: Mapped[str] = mapped_column(String(16), default="client")
    task: Mapped[str] = mapped_column(String(32), default="classification")
    recipe: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # A user's script's settings and knobs (overfit_advisor.trial): verified by its agents.
    trainer: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    model_facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    data_facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    constraints: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metric_name: Mapped[str | None] = mapped_column(String(64), default=None)
    metric_higher_is_better: Mapped[bool | None] = mapped_column(Boolean, default=None)
    epochs: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    n_epochs: Mapped[int] = mapped_column(Integer, default=0)
    verdict: Mapped[str] = mapped_column(String(32))
    rung: Mapped[str | None] = mapped_column(String(32), default=None)
    diagnosis: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recommendation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Hyperparameters as reported: a flat object of strings, finite numbers and booleans.
    params: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # The client's key for the request that created the run: a retry answers this run again.
    idempotency_key: Mapped[str | None] = mapped_column(String(64), default=None)
    # SHA-256 of that request's canonical body: the key reused with another body is refused.
    idempotency_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    # Appending epochs is read-modify-write; the version makes a concurrent append fail, not win.
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RunTag(Base):
    """A run's free tags, one row each, so that filtering by tag is an indexed join."""

    __tablename__ = "run_tags"
    __table_args__ = (Index("ix_run_tags_tag_run_id", "tag", "run_id"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Tags come back in the order they were reported.
    position: Mapped[int] = mapped_column(Integer)


class Verification(Base):
    """A verification job. The table is the queue: workers claim the oldest runnable row and hold
    it under a lease that their heartbeat renews; an expired lease makes the job claimable again."""

    __tablename__ = "verifications"
    __table_args__ = (Index("ix_verifications_status_created_at", "status", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    rung: Mapped[str] = mapped_column(String(32))
    level: Mapped[int | None] = mapped_column(Integer, default=None)
    candidate_recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seeds: Mapped[list[int]] = mapped_column(JSONType, default=list)
    epochs: Mapped[int | None] = mapped_column(Integer, default=None)
    device: Mapped[str] = mapped_column(String(16), default="auto")
    gpus: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    budget: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[JobStatus] = mapped_column(JobStatusType(), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    verdict: Mapped[str | None] = mapped_column(String(16), default=None)
    effect: Mapped[float | None] = mapped_column(Float, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class RungVerdict(Base):
    """One rung's verdict from a finished verification: one row for a single-rung check, one
    per candidate for a race. The ladder reads the lineage's verdicts from here, and the
    evidence of similar runs (project, task, architecture family, training-set size)."""

    __tablename__ = "rung_verdicts"
    __table_args__ = (
        Index("ux_rung_verdicts_verification_rung", "verification_id", "rung", unique=True),
        Index("ix_rung_verdicts_project_rung", "project_id", "rung"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    verification_id: Mapped[int] = mapped_column(ForeignKey("verifications.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    rung: Mapped[str] = mapped_column(String(32))
    verdict: Mapped[str] = mapped_column(String(16))
    effect: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrialStatus(StrEnum):
    """A trial's state: queued until a worker claims it, running under that worker's lease,
    then done (finished, or stopped at a race checkpoint), failed or cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Trial(Base):
    """One training of one recipe with one seed: the unit of work. The service queues the
    trials a verification's protocol needs; any worker whose devices fit claims one and holds it
    under a lease its heartbeats renew (each heartbeat brings the epochs trained so far). A
    training done once with the same recipe (its fingerprint covers the data spec and epochs)
    and seed is reused, not retrained: the unique index also keeps two workers from training
    the same one at once."""

    __tablename__ = "trials"
    __table_args__ = (
        Index("ix_trials_recipe_seed", "recipe_fingerprint", "seed", unique=True),
        Index("ix_trials_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    verification_id: Mapped[int | None] = mapped_column(
        ForeignKey("verifications.id", ondelete="SET NULL"), index=True, default=None
    )
    role: Mapped[str] = mapped_column(String(16))
    recipe_fingerprint: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)
    curve: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    figures: Mapped[dict[str, Any]] = mapped_column(default=dict)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    # Where it ran (cuda:0, 2xcuda, cpu), once it ran.
    device: Mapped[str] = mapped_column(String(16), default="cpu")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Rows stored before trials were queued are finished trainings: done.
    status: Mapped[str] = mapped_column(String(16), default="done", server_default="done")
    rung: Mapped[str] = mapped_column(String(32), default="", server_default="")
    # What it asks of a worker: a device kind or one device, and how many devices.
    wants_device: Mapped[str] = mapped_column(String(16), default="auto", server_default="auto")
    gpus: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The worker that trained it (kept once the lease is gone), when, and why it failed.
    worker: Mapped[str | None] = mapped_column(String(128), default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # Who trains it: the model builder's worker, or an agent running the user's script.
    runner: Mapped[str] = mapped_column(String(16), default="builder", server_default="builder")
