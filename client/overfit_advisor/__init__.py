"""Report training runs to Overfit Advisor from the training script.

``Client``/``AsyncClient`` speak the API; ``track`` reports a hand-written loop; the callbacks
live in ``overfit_advisor.fastai``, ``.lightning``, ``.keras`` and ``.transformers``; ``trial``
gives a script its settings, its defaults or, run by ``overfit-advisor agent``, a verification
trial's."""

from overfit_advisor.client import AsyncClient, Client
from overfit_advisor.errors import AdvisorError, AdvisorUnavailable
from overfit_advisor.tracking import Snapshots, TrackedRun, track
from overfit_advisor.trials import KNOBS, trial
from overfit_advisor.types import Diagnosis, Lineage, Recommendation, Run, Verification

__all__ = [
    "KNOBS",
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
    "trial",
]
