"""Report training runs to Overfit Advisor from the training script.

``Client``/``AsyncClient`` speak the API; ``track`` reports a hand-written loop; the callbacks
live in ``overfit_advisor.fastai``, ``.lightning``, ``.keras`` and ``.transformers``."""

from overfit_advisor.client import AsyncClient, Client
from overfit_advisor.errors import AdvisorError, AdvisorUnavailable
from overfit_advisor.tracking import Snapshots, TrackedRun, track
from overfit_advisor.types import Diagnosis, Lineage, Recommendation, Run, Verification

__all__ = [
    "AdvisorError",
    "AdvisorUnavailable",
    "AsyncClient",
    "Client",
    "Diagnosis",
    "Lineage",
    "Recommendation",
    "Run",
    "Snapshots",
    "TrackedRun",
    "Verification",
    "track",
]
