"""Reporting a run while it trains, for hand-written loops and for the framework callbacks.

The training loop comes first: a report never raises into it. Epochs wait in memory while the
service is unreachable and go out, in order and once, when it answers again; a refusal (a bad
token, a bad field) is said once and reporting stops for the run.
"""

import logging
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypedDict, TypeVar, Unpack

from overfit_advisor.calls import Epoch, epoch_record
from overfit_advisor.client import Client
from overfit_advisor.errors import AdvisorError, AdvisorUnavailable
from overfit_advisor.types import Diagnosis, Recommendation, Run

log = logging.getLogger("overfit_advisor")
W = TypeVar("W")
STOP_VERDICTS = frozenset({"overfitting", "no_signal", "diverging"})


def _say(text: str) -> None:
    print(f"overfit-advisor: {text}", file=sys.stderr, flush=True)


def logged_metrics(
    logged: dict[str, Any], prefix: str, skip: Iterable[str] = ()
) -> dict[str, float]:
    """The validation metrics among a framework's logged values: the keys with ``prefix``
    (``val_``, ``eval_``), named without it, less ``skip``, and only finite numbers."""
    found = {}
    for key, value in logged.items():
        name = key.removeprefix(prefix)
        if name == key or name in skip or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            found[name] = number
    return found


def merge_facts(found: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Facts a callback found, overridden by what the user passed (section by section)."""
    merged = dict(found)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        elif value is not None:
            merged[key] = value
    return merged


class TrackedRun:
    """A run being reported epoch by epoch; made by :func:`track` and the callbacks."""

    def __init__(
        self,
        name: str,
        *,
        client: Client | None = None,
        url: str | None = None,
        token: str | None = None,
        stop_when_overfitting: bool = False,
        confirm_epochs: int = 2,
        retry_s: tuple[float, float] = (1.0, 30.0),
        finish_timeout_s: float = 20.0,
        say: Callable[[str], None] = _say,
        **facts: Any,
    ) -> None:
        self.client = client or Client(url, token, timeout=5.0)
        self.name = name
        self.facts = facts
        self.stop_when_overfitting = stop_when_overfitting
        # A verdict on a run's first epochs can flip with the next one: stopping waits until it
        # has held for this many diagnoses in a row.
        self.confirm_epochs = confirm_epochs
        self._held, self._judged = 0, 0
        self.run: Run | None = None
        self.pending: list[Epoch] = []
        self.should_stop = False
        self._key = uuid.uuid4().hex  # makes creating the run safe to retry
        self._retry = retry_s
        self._backoff = retry_s[0]
        self._next_try = 0.0
        self._finish_timeout = finish_timeout_s
        self._refused = False
        self._said_unreachable = False
        self._say = say

    @property
    def diagnosis(self) -> Diagnosis | None:
        return self.run.diagnosis if self.run else None

    @property
    def recommendation(self) -> Recommendation | None:
        return self.run.recommendation if self.run else None

    @property
    def stop_epoch(self) -> int | None:
        """The epoch whose weights to keep, by the latest diagnosis."""
        return self.diagnosis.stop_epoch if self.diagnosis else None

    def epochs_to_keep(self) -> set[int]:
        """Epochs a later diagnosis may name as the one to stop at: the current stop epoch and
        the best epoch so far of each signal (the deciding signal can change from epoch to
        epoch)."""
        d = self.diagnosis
        if d is None:
            return set()
        best = {s.get("best_epoch") for s in d.evidence.get("signals", {}).values()}
        return {e for e in (d.stop_epoch, *best) if isinstance(e, int)}

    def add_facts(self, **facts: Any) -> None:
        """Facts found after the start (before the first report goes out); the user's win."""
        self.facts = merge_facts(facts, self.facts)

    def log_epoch(
        self, epoch: int, train_loss: float, valid_loss: float, **metrics: float
    ) -> Diagnosis | None:
        """Queue an epoch and send what is waiting; answers the latest diagnosis (None until
        the service has answered once). Never raises."""
        try:
            record = epoch_record(epoch, train_loss, valid_loss, **metrics)
            if not all(map(math.isfinite, [train_loss, valid_loss, *metrics.values()])):
                # The service refuses NaN and infinity; the epochs before show the blow-up.
                self._say(f"epoch {epoch} has a value that is not a finite number: not reported")
                return self.diagnosis
            self.pending.append(record)
            self._send()
        except Exception:  # the training loop must go on, whatever happens here
            log.exception("overfit-advisor: reporting epoch %s failed", epoch)
        return self.diagnosis

    def finish(self) -> Run | None:
        """Send what is left (retrying for a bounded time) and print the diagnosis."""
        try:
            deadline = time.monotonic() + self._finish_timeout
            while self.pending and not self._refused and time.monotonic() < deadline:
                self._send(wait=True)
            if self.pending and not self._refused:
                self._say(f"{len(self.pending)} epochs could not be reported (service unreachable)")
            elif self.run is not None:
                self._say(self.summary_line())
        except Exception:
            log.exception("overfit-advisor: finishing the report failed")
        return self.run

    def summary_line(self) -> str:
        run, d, rec = self.run, self.diagnosis, self.recommendation
        if run is None or d is None:
            return "no diagnosis yet"
        next_step = (
            f"next: {rec.rung} — {rec.action}" if rec and rec.rung else (rec.action if rec else "")
        )
        return f"{d.verdict} — {d.summary} {next_step} ({self.client.page_url(run)})"

    def _send(self, wait: bool = False) -> None:
        if self._refused or not self.pending:
            return
        pause = self._next_try - time.monotonic()
        if pause > 0:
            if not wait:
                return
            time.sleep(pause)
        try:
            if self.run is None:
                run = self.client.report(
                    self.name, self.pending, idempotency_key=self._key, **self.facts
                )
            else:
                run = self.client.log_epochs(self.run.id, self.pending)
        except AdvisorUnavailable as exc:
            self._next_try = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._retry[1])
            if not self._said_unreachable:
                self._said_unreachable = True
                self._say(f"service unreachable ({exc.message}); keeping epochs, will retry")
            return
        except AdvisorError as exc:
            if self.run is not None and exc.status == 422 and "epoch" in exc.message:
                self._resync()
                return
            self._refused = True
            field = f" [{exc.field}]" if exc.field else ""
            self._say(f"the service refused the report ({exc.status}){field}: {exc.message}")
            return
        self._accept(run)
        if self.pending:  # a retried creation answered the run as first stored: send the rest
            self._send()

    def _resync(self) -> None:
        """A post whose answer was lost did arrive: keep only what the service lacks."""
        assert self.run is not None
        self._accept(self.client.run(self.run.id))

    def _accept(self, run: Run) -> None:
        self.run = run
        last = run.epochs[-1]["epoch"] if run.epochs else -1
        self.pending = [e for e in self.pending if e["epoch"] > last]
        self._backoff, self._next_try = self._retry[0], 0.0
        if self._said_unreachable:
            self._said_unreachable = False
            self._say("service reachable again; reporting resumed")
        if run.n_epochs != self._judged:  # a new diagnosis, not the same one read again
            self._judged = run.n_epochs
            self._held = self._held + 1 if run.verdict in STOP_VERDICTS else 0
        if (
            self.stop_when_overfitting
            and self._held >= self.confirm_epochs
            and not self.should_stop
        ):
            self.should_stop = True
            d = run.diagnosis
            self._say(
                f"stopping: {run.verdict}; keep the weights of epoch "
                f"{d.stop_epoch if d else '?'} ({self.client.page_url(run)})"
            )


class ReportingOptions(TypedDict, total=False):
    """What every framework callback accepts besides the run's name."""

    metric: str | dict[str, Any] | None
    facts: dict[str, Any] | None
    stop_when_overfitting: bool
    confirm_epochs: int
    url: str | None
    token: str | None
    client: Client | None
    retry_s: tuple[float, float]
    finish_timeout_s: float


class Reporting:
    """A callback's reporting settings: ``metric`` to judge by (a name or ``{"name",
    "higher_is_better"}``); ``facts`` as in a report (``model``, ``data``, ``params``, ``tags``,
    ``recipe``, ...), winning over what the callback finds; ``stop_when_overfitting``; the
    service's ``url``/``token`` or a ``client``; ``retry_s``/``finish_timeout_s`` for
    :class:`TrackedRun`."""

    def __init__(self, name: str | None = None, **options: Unpack[ReportingOptions]) -> None:
        rest: dict[str, Any] = dict(options)
        self.name = name
        self.metric = rest.pop("metric", None)
        self.facts = dict(rest.pop("facts", None) or {})
        self.stop_when_overfitting = bool(rest.pop("stop_when_overfitting", False))
        self.options = rest  # url, token, client, retry_s, finish_timeout_s

    def start(self, default_name: str) -> TrackedRun:
        """A new run for one fit, named by the user or after the model."""
        return TrackedRun(
            self.name or default_name,
            stop_when_overfitting=self.stop_when_overfitting,
            metric=self.metric,
            **self.options,
            **self.facts,
        )


class Snapshots(Generic[W]):
    """In-memory copies of the weights of the epochs :meth:`TrackedRun.epochs_to_keep` names,
    so that stopping can put back the weights of the stop epoch (at most one copy per signal)."""

    def __init__(self, run: TrackedRun, take: Callable[[], W], waiting: int = 5) -> None:
        self.run, self.take, self.waiting = run, take, waiting
        self.copies: dict[int, W] = {}

    def after_epoch(self, epoch: int) -> None:
        """Call after logging ``epoch``: copies its weights if a diagnosis may name it."""
        if self.run.stop_epoch is None:
            # No diagnosis names an epoch yet (too few epochs, or the service is away): any of
            # the latest ``waiting`` epochs may be named later.
            self.copies[epoch] = self.take()
            for old in sorted(self.copies)[: -self.waiting]:
                del self.copies[old]
            return
        keep = self.run.epochs_to_keep()
        self.copies = {e: w for e, w in self.copies.items() if e in keep}
        if epoch in keep:
            self.copies[epoch] = self.take()

    def of_stop_epoch(self) -> W | None:
        stop = self.run.stop_epoch
        return self.copies.get(stop) if stop is not None else None


@contextmanager
def track(
    name: str,
    metric: str | dict[str, Any] | None = None,
    facts: dict[str, Any] | None = None,
    **options: Any,
) -> Iterator[TrackedRun]:
    """``with track("resnet34-pets", metric="accuracy") as run: ... run.log_epoch(...)``.

    ``facts``: ``model``, ``data``, ``constraints``, ``recipe``, ``params``, ``tags``, ... as in
    a report; ``options``: ``url``, ``token``, ``client``, ``stop_when_overfitting``."""
    run = TrackedRun(name, metric=metric, **(facts or {}), **options)
    try:
        yield run
    finally:
        run.finish()
