"""What a trial trains: a model builder :class:`Recipe` (trained by ``advisor worker``), or a
:class:`Script`, the user's own training script run with a settings change by ``overfit-advisor
agent``. Both are stored as a trial's ``recipe`` JSON and answer the same questions: how many
epochs, which metric a verification compares, the identity under which a training is reused,
and the same training with a change applied.
"""

import hashlib
import json
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from app.builder.recipe import PRIMARY_METRIC, Recipe

Runner = Literal["builder", "script"]
BUILDER: Runner = "builder"
SCRIPT: Runner = "script"


class Script(BaseModel):
    """One training of a user's script: the settings it reads (its reported ones, with the
    trial's change applied), how many epochs (evaluations) it reports, and the run's metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runner: Literal["script"] = "script"
    # The verified run: a script's settings mean something only to that script, so its
    # trainings are reused by verifications of the same run, never of another.
    run_id: int
    run_name: str
    settings: dict[str, Any]
    change: dict[str, Any] = {}
    epochs: int
    metric: str
    higher_is_better: bool

    def fingerprint(self, stopped_at: int | None = None) -> str:
        """As :meth:`Recipe.fingerprint`; the change is in the settings already."""
        who = self.model_dump(mode="json", exclude={"change"})
        text = json.dumps(who, sort_keys=True, separators=(",", ":"))
        if stopped_at is not None:
            text = f"{self.fingerprint()}@{stopped_at}"
        return hashlib.sha256(text.encode()).hexdigest()

    def changed(self, settings: dict[str, Any]) -> "Script":
        merged = {"settings": {**self.settings, **settings}, "change": {**self.change, **settings}}
        return self.model_copy(update=merged)

    @property
    def data_fraction(self) -> float:
        return float(self.settings.get("data_fraction") or 1.0)


Training = Recipe | Script


def training_of(stored: dict[str, Any]) -> Training:
    if stored.get("runner") == SCRIPT:
        return Script.model_validate(stored)
    return Recipe.model_validate(stored)


def runner_of(stored: dict[str, Any]) -> Runner:
    return SCRIPT if stored.get("runner") == SCRIPT else BUILDER


class Measure(NamedTuple):
    """The validation figure a verification compares trainings by, and its direction."""

    name: str
    higher_is_better: bool


def measure_of(training: Training) -> Measure:
    if isinstance(training, Script):
        return Measure(training.metric, training.higher_is_better)
    return Measure(PRIMARY_METRIC[training.task], True)
