"""Figures for /metrics, read from the database so every API process reports the same totals."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.advisor.diagnosis import Verdict
from app.models import Run, Verification

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def prometheus_text(session: Session) -> str:
    runs = dict.fromkeys((v.value for v in Verdict), 0)
    runs.update(session.execute(select(Run.verdict, func.count()).group_by(Run.verdict)).all())
    jobs = dict.fromkeys(STATUSES, 0)
    jobs.update(
        session.execute(
            select(Verification.status, func.count()).group_by(Verification.status)
        ).all()
    )
    lines = [
        "# HELP advisor_runs Runs in the history, by diagnosis verdict.",
        "# TYPE advisor_runs gauge",
        *(f'advisor_runs{{verdict="{k}"}} {n}' for k, n in sorted(runs.items())),
        "# HELP advisor_verifications Verification jobs, by status.",
        "# TYPE advisor_verifications gauge",
        *(f'advisor_verifications{{status="{k}"}} {n}' for k, n in sorted(jobs.items())),
    ]
    return "\n".join(lines) + "\n"
