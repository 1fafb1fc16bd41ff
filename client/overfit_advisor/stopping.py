"""The live stop rule every callback applies to the diagnoses the service answers, as one small
pure class, so that a benchmark replays exactly what a training loop does."""

from collections.abc import Mapping
from typing import Any

from overfit_advisor.types import EpochNumber

# What an older service's verdict alone meant, before it answered ``should_stop`` itself.
STOP_VERDICTS = frozenset({"overfitting", "no_signal", "diverging"})


class LiveStop:
    """Feed it each new diagnosis (the service's answer, as a dict); it answers True once
    ``confirm`` diagnoses in a row say stop: ``should_stop`` true (the service's sequential rule,
    which already asks two looks in a row), or, from a service that does not answer it, a verdict
    in :data:`STOP_VERDICTS` — then at least two in a row, since such a verdict on a run's first
    evaluations can flip with the next one.

    ``held``: how many diagnoses in a row said stop; ``kept_epoch``: the ``stop_epoch`` of the
    diagnosis that stopped, else of the latest one. ``None`` (no answer) changes nothing."""

    def __init__(self, confirm: int = 1) -> None:
        self.confirm = confirm
        self.held = 0
        self.stopped = False
        self.kept_epoch: EpochNumber | None = None

    def see(self, diagnosis: Mapping[str, Any] | None) -> bool:
        if diagnosis is None or self.stopped:
            return self.stopped
        says_stop = diagnosis.get("should_stop")
        needed = self.confirm
        if says_stop is None:
            says_stop = diagnosis.get("verdict") in STOP_VERDICTS
            needed = max(needed, 2)
        self.held = self.held + 1 if says_stop else 0
        self.kept_epoch = diagnosis.get("stop_epoch")
        self.stopped = self.held >= needed
        return self.stopped
