"""Typed results mirroring the service's answers. Each keeps the whole answer in ``raw``, so a
field the service adds later is never lost to an older client."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# An epoch number as reported: an integer, or fractional for an evaluation mid-epoch.
EpochNumber = int | float


@dataclass(frozen=True)
class Diagnosis:
    verdict: str
    summary: str
    best_epoch: EpochNumber | None
    stop_epoch: EpochNumber | None
    onset_epoch: EpochNumber | None
    signal: str | None
    evidence: dict[str, Any]
    # The service's own decision that a training reporting live should stop now (an older
    # service does not make it: False).
    should_stop: bool = False
    # Set by TrackedRun.log_epoch while the latest epochs wait unsent (the service unreachable):
    # this diagnosis does not include them.
    stale: bool = False

    @classmethod
    def of(cls, d: dict[str, Any]) -> "Diagnosis":
        return cls(
            verdict=d["verdict"],
            summary=d.get("summary", ""),
            best_epoch=d.get("best_epoch"),
            stop_epoch=d.get("stop_epoch"),
            onset_epoch=d.get("onset_epoch"),
            signal=d.get("signal"),
            evidence=d.get("evidence", {}),
            should_stop=bool(d.get("should_stop")),
        )


@dataclass(frozen=True)
class Recommendation:
    rung: str | None
    level: int | None
    action: str
    change: dict[str, Any]
    rationale: str
    skipped: list[dict[str, str]]
    alternatives: list[dict[str, Any]]
    ladder: list[dict[str, Any]]
    # Past verdicts of similar runs for the recommended rung (counts, median effect), if any.
    evidence: dict[str, Any] | None = None

    @classmethod
    def of(cls, d: dict[str, Any]) -> "Recommendation":
        return cls(
            rung=d.get("rung"),
            level=d.get("level"),
            action=d.get("action", ""),
            change=d.get("change", {}),
            rationale=d.get("rationale", ""),
            skipped=d.get("skipped", []),
            alternatives=d.get("alternatives", []),
            ladder=d.get("ladder", []),
            evidence=d.get("evidence"),
        )


@dataclass(frozen=True)
class Run:
    """A stored run. Listings carry the summary only: ``diagnosis``, ``recommendation`` and
    ``epochs`` are filled for a run fetched by itself or just reported."""

    id: int
    name: str
    project: str
    verdict: str
    rung: str | None
    n_epochs: int
    parent_id: int | None
    created_at: datetime | None
    tags: list[str]
    params: dict[str, Any]
    diagnosis: Diagnosis | None
    recommendation: Recommendation | None
    epochs: list[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> "Run":
        return cls(
            id=d["id"],
            name=d.get("name", ""),
            project=d.get("project", ""),
            verdict=d.get("verdict", ""),
            rung=d.get("rung"),
            n_epochs=d.get("n_epochs", 0),
            parent_id=d.get("parent_id"),
            created_at=_time(d.get("created_at")),
            tags=d.get("tags", []),
            params=d.get("params", {}),
            diagnosis=Diagnosis.of(d["diagnosis"]) if d.get("diagnosis") else None,
            recommendation=(
                Recommendation.of(d["recommendation"]) if d.get("recommendation") else None
            ),
            epochs=d.get("epochs", []),
            raw=d,
        )


@dataclass(frozen=True)
class Verification:
    id: int
    run_id: int
    rung: str
    status: str
    verdict: str | None
    effect: float | None
    progress: dict[str, Any]
    rungs: list[str]
    result: dict[str, Any] | None
    error: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def done(self) -> bool:
        """Nothing more will change. The server says so; one from before it did: the statuses
        that end a job."""
        if "finished" in self.raw:
            return bool(self.raw["finished"])
        return self.status in ("succeeded", "failed", "cancelled")

    @classmethod
    def of(cls, d: dict[str, Any]) -> "Verification":
        return cls(
            id=d["id"],
            run_id=d["run_id"],
            rung=d.get("rung", ""),
            rungs=list(d.get("rungs") or [d.get("rung", "")]),
            status=d["status"],
            verdict=d.get("verdict"),
            effect=d.get("effect"),
            progress=d.get("progress") or {},
            result=d.get("result"),
            error=d.get("error"),
            raw=d,
        )


@dataclass(frozen=True)
class Lineage:
    run: Run
    ancestors: list[Run]
    descendants: list[Run]

    @classmethod
    def of(cls, d: dict[str, Any]) -> "Lineage":
        return cls(
            run=Run.of(d["run"]),
            ancestors=[Run.of(r) for r in d.get("ancestors", [])],
            descendants=[Run.of(r) for r in d.get("descendants", [])],
        )


@dataclass(frozen=True)
class ClaimedTrial:
    """A script trial leased to an agent: which training of which verification, and the
    settings the script trains with (the baseline's, with the trial's ``change`` applied)."""

    id: int
    verification_id: int
    role: str
    rung: str
    seed: int
    epochs: int
    attempt: int
    lease_s: float
    settings: dict[str, Any]
    change: dict[str, Any]
    run_name: str
    # The metric the verification compares; "valid_loss" when the run named none.
    metric: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> "ClaimedTrial":
        return cls(
            id=d["id"],
            verification_id=d["verification_id"],
            role=d.get("role", ""),
            rung=d.get("rung", ""),
            seed=d["seed"],
            epochs=d.get("epochs", 0),
            attempt=d.get("attempt", 1),
            lease_s=float(d.get("lease_s", 30.0)),
            settings=dict(d.get("settings") or {}),
            change=dict(d.get("change") or {}),
            run_name=d.get("run_name") or "",
            metric=d.get("metric") or "valid_loss",
            raw=d,
        )
