"""Reporting a run while it trains, for hand-written loops and for the framework callbacks.

The training loop comes first: a report never raises into it. Epochs wait in memory while the
service is unreachable and go out, in order and once, when it answers again; a refusal (a bad
token, a bad field) is said once and reporting stops for the run. Run by ``overfit-advisor
agent``, the evaluations go to the agent's trial instead (:mod:`overfit_advisor.trials`).
"""

import logging
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Generic, SupportsFloat, SupportsIndex, TypedDict, TypeVar, Unpack

from overfit_advisor.calls import Epoch, epoch_record
from overfit_advisor.client import Client
from overfit_advisor.errors import AdvisorError, AdvisorUnavailable
from overfit_advisor.stopping import LiveStop
from overfit_advisor.trials import Trial, append_record, current, trainer
from overfit_advisor.types import Diagnosis, EpochNumber, Recommendation, Run

log = logging.getLogger("overfit_advisor")
W = TypeVar("W")
# Arguments of log_epoch besides the metrics: a logged metric of these names is not reported.
RESERVED = frozenset({"step", "lr"})


def _say(text: str) -> None:
    print(f"overfit-advisor: {text}", file=sys.stderr, flush=True)


def running_trial() -> Trial | None:
    """The trial an agent runs this script for, if any; a malformed ``ADVISOR_TRIAL`` is said
    and ignored rather than raised into training."""
    try:
        return current()
    except ValueError as exc:
        log.warning("overfit-advisor: %s", exc)
        return None


_said: set[str] = set()  # what is said once per process


def _no_live_stop(say: Callable[[str], None]) -> None:
    """Under an agent the verification decides how long a trial trains (its stop comes from
    the service through the agent); said once per process."""
    if "no live stop" not in _said:
        _said.add("no live stop")
        say("running a verification's trial: stop_when_overfitting is off (the agent stops it)")


def logged_metrics(
    logged: dict[str, Any], prefix: str, skip: Iterable[str] = ()
) -> dict[str, float]:
    """The validation metrics among a framework's logged values: the keys with ``prefix``
    (``val_``, ``eval_``), named without it, less ``skip`` and :data:`RESERVED`, and only
    finite numbers."""
    found = {}
    for key, value in logged.items():
        name = key.removeprefix(prefix)
        if name == key or name in skip or name in RESERVED or isinstance(value, bool):
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
    """A run being reported evaluation by evaluation; made by :func:`track` and the
    callbacks.

    Run by ``overfit-advisor agent`` (``ADVISOR_TRIAL`` set), it reports to the agent instead:
    each evaluation becomes a line of the trial's epochs file, nothing is sent to the service
    and live stopping is off. Otherwise a report carries the trainer :func:`trial` declared."""

    def __init__(
        self,
        name: str,
        *,
        client: Client | None = None,
        url: str | None = None,
        token: str | None = None,
        stop_when_overfitting: bool = False,
        confirm_epochs: int = 1,
        retry_s: tuple[float, float] = (1.0, 30.0),
        finish_timeout_s: float = 20.0,
        say: Callable[[str], None] = _say,
        **facts: Any,
    ) -> None:
        self.client = client or Client(url, token, timeout=5.0)
        self.name = name
        self.trial = running_trial()
        declared = trainer()
        if self.trial is None and declared is not None and "trainer" not in facts:
            facts["trainer"] = declared
        self.facts = facts
        self.stop_when_overfitting = stop_when_overfitting and self.trial is None
        if stop_when_overfitting and self.trial is not None:
            _no_live_stop(say)
        # ``confirm_epochs`` diagnoses in a row must say stop (see LiveStop).
        self.live = LiveStop(confirm_epochs)
        self._judged = 0
        self.run: Run | None = None
        self.pending: list[Epoch] = []
        self.should_stop = False
        self._key = uuid.uuid4().hex  # makes creating the run safe to retry
        # The epochs and facts the key was first sent with: the service refuses the key with
        # another body, so a retry sends these again and the epochs since as an append.
        self._creation: tuple[list[Epoch], dict[str, Any]] | None = None
        self._retry = retry_s
        self._backoff = retry_s[0]
        self._next_try = 0.0
        self._finish_timeout = finish_timeout_s
        self._refused = False
        self._said_unreachable = False
        self._said_underfitting = False
        # How many evaluations the run had when the service last diagnosed it as finished.
        self._finished = -1
        self._say = say

    @property
    def diagnosis(self) -> Diagnosis | None:
        return self.run.diagnosis if self.run else None

    @property
    def recommendation(self) -> Recommendation | None:
        return self.run.recommendation if self.run else None

    @property
    def stale(self) -> bool:
        """Evaluations wait unsent: the latest diagnosis does not include them."""
        return bool(self.pending) and not self._refused

    @property
    def stop_epoch(self) -> EpochNumber | None:
        """The epoch whose weights to keep: the one the diagnosis that stopped training named,
        else the latest diagnosis's."""
        if self.should_stop:
            return self.live.kept_epoch
        return self.diagnosis.stop_epoch if self.diagnosis else None

    def epochs_to_keep(self) -> set[EpochNumber]:
        """Epochs a later diagnosis may name as the one to stop at: the current stop epoch, the
        best epoch so far of each signal (the deciding signal can change from one evaluation to
        the next) and the ``candidates`` the diagnosis says the kept epoch may move to."""
        d = self.diagnosis
        if d is None:
            return set()
        best = [s.get("best_epoch") for s in d.evidence.get("signals", {}).values()]
        named = [d.stop_epoch, *best, *d.evidence.get("candidates", [])]
        return {e for e in named if isinstance(e, int | float) and not isinstance(e, bool)}

    def add_facts(self, **facts: Any) -> None:
        """Facts found after the start (before the first report goes out); the user's win."""
        self.facts = merge_facts(facts, self.facts)

    def log_epoch(
        self,
        epoch: SupportsIndex | float,
        train_loss: SupportsFloat | None,
        valid_loss: SupportsFloat,
        *,
        step: SupportsIndex | None = None,
        lr: SupportsFloat | None = None,
        **metrics: SupportsFloat,
    ) -> Diagnosis | None:
        """Queue an evaluation and send what is waiting; answers the latest diagnosis (None
        until the service has answered once), marked ``stale`` while evaluations wait unsent.
        ``train_loss`` None: none was logged since the previous evaluation; ``step``: the
        global step of an evaluation made every so many steps; ``lr``: the learning rate (so
        ``step`` and ``lr`` are not metric names). Never raises."""
        try:
            record = epoch_record(epoch, train_loss, valid_loss, step=step, lr=lr, **metrics)
            rate = record.get("lr")
            if rate is not None and not (math.isfinite(rate) and rate > 0):
                del record["lr"]  # a schedule at zero (a warm-up's start) tells nothing
            values = [record["train_loss"], record["valid_loss"], *record["metrics"].values()]
            if not all(math.isfinite(v) for v in values if v is not None):
                # The service refuses NaN and infinity; the epochs before show the blow-up.
                self._say(
                    f"{self.where(record['epoch'])} has a value that is not a finite number: "
                    "not reported"
                )
                return self._latest()
            if self.trial is not None:
                append_record(self.trial.epochs_file, record)
                return None
            self.pending.append(record)
            self._send()
        except Exception:  # the training loop must go on, whatever happens here
            log.exception("overfit-advisor: reporting epoch %s failed", epoch)
        return self._latest()

    def finish(self) -> Run | None:
        """Send what is left (retrying for a bounded time), have the run diagnosed as finished
        (unless the live rule stopped it) and print the diagnosis; under an agent, nothing (the
        agent hands the trial in)."""
        if self.trial is not None:
            return None
        try:
            deadline = time.monotonic() + self._finish_timeout
            while self.pending and not self._refused and time.monotonic() < deadline:
                self._send(wait=True)
            if self.pending and not self._refused:
                self._say(
                    f"{self._count(len(self.pending))} could not be reported (service unreachable)"
                )
            elif not self.should_stop:
                # A run the live rule stopped ends on the verdict it stopped on, confirmed at
                # two looks; any other is diagnosed whole, as finished.
                self._finish_run(deadline)
            d = self.diagnosis
            if self.run is not None and d is not None:
                # The underfitting advice is said once per run: finishing again repeats only
                # the verdict.
                underfitting = d.verdict == "underfitting"
                self.say(self.summary_line(advice=not (underfitting and self._said_underfitting)))
                self._said_underfitting |= underfitting
        except Exception:
            log.exception("overfit-advisor: finishing the report failed")
        return self.run

    def _finish_run(self, deadline: float) -> None:
        """Have the service diagnose the run as finished: the last look of a run in progress
        waits a look to confirm a signal that just got worse, and none will come. Retried
        until ``deadline`` (finishing twice is finishing once); a service that cannot (an older
        one, or one away until then) leaves the last look's diagnosis."""
        if self.run is None or self._refused or self._finished == self.run.n_epochs:
            return
        while True:
            try:
                self.run = self.client.finish_run(self.run.id)
                self._finished = self.run.n_epochs
                self._reachable()
                return
            except AdvisorUnavailable as exc:
                self._back_off()
                if self._next_try >= deadline:
                    log.warning("overfit-advisor: the run's last look stands (%s)", exc)
                    return
                time.sleep(max(0.0, self._next_try - time.monotonic()))
            except AdvisorError as exc:
                log.warning("overfit-advisor: the run's last look stands (%s)", exc)
                return

    def say(self, text: str) -> None:
        """Print a line about the run; while evaluations wait unsent, it says the diagnosis it
        speaks of is stale."""
        if self.stale:
            more = len(self.pending) - 1
            text += f" [stale: not yet diagnosed: {self.where(self.pending[0]['epoch'])}"
            text += f" and {more} more]" if more else "]"
        self._say(text)

    def where(self, epoch: EpochNumber | None) -> str:
        """How the lines name an evaluation: "epoch 12", or "step 800" where the report
        placed it by its step."""
        step = self._steps().get(epoch) if epoch is not None else None
        return f"step {step}" if step is not None else f"epoch {epoch}"

    def say_restored(self, epoch: EpochNumber | None) -> None:
        """The line a callback prints once it put back the weights of ``epoch``: what that epoch
        scored by the run's criterion, beside the best seen."""
        d, stored = self.diagnosis, self.run.epochs if self.run else []
        criterion = d.evidence.get("criterion") if d else None
        scored = (
            {}
            if criterion is None
            else {e["epoch"]: _criterion_value(e, criterion) for e in stored}
        )
        known = {e: v for e, v in scored.items() if v is not None}
        text = f"put back the weights of {self.where(epoch)}"
        if d is not None and epoch in known:
            pick = max if d.evidence.get("higher_is_better") else min
            best = pick(known, key=known.__getitem__)
            seen = (
                "the best seen"
                if known[best] == known[epoch]
                else f"best seen {known[best]:.4g} at {self.where(best)}"
            )
            text += f" ({criterion} {known[epoch]:.4g}; {seen})"
        self.say(text)

    def summary_line(self, advice: bool = True) -> str:
        """The verdict, its summary and the next remedy (``advice``: with the summary and the
        remedy, else the verdict alone), and the run's page."""
        run, d, rec = self.run, self.diagnosis, self.recommendation
        if run is None or d is None:
            return "no diagnosis yet"
        if not advice:
            return f"{d.verdict} (advice above) ({self.client.page_url(run)})"
        next_step = (
            f"next: {rec.rung} — {rec.action}" if rec and rec.rung else (rec.action if rec else "")
        )
        return f"{d.verdict} — {d.summary} {next_step} ({self.client.page_url(run)})"

    def _latest(self) -> Diagnosis | None:
        d = self.diagnosis
        return replace(d, stale=True) if d is not None and self.stale else d

    def _count(self, n: int) -> str:
        """ "3 epochs", or "3 evaluations" in a run evaluated every so many steps."""
        unit = "evaluation" if self._steps() else "epoch"
        return f"{n} {unit}{'' if n == 1 else 's'}"

    def _steps(self) -> dict[EpochNumber, int]:
        """The step of each evaluation that carries one, stored or waiting."""
        records = [*(self.run.epochs if self.run else []), *self.pending]
        return {r["epoch"]: r["step"] for r in records if r.get("step") is not None}

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
                if self._creation is None:
                    self._creation = (list(self.pending), dict(self.facts))
                epochs, facts = self._creation
                run = self.client.report(self.name, epochs, idempotency_key=self._key, **facts)
            else:
                # The answer carries the last evaluation only: the rest is what was sent.
                run = self._whole(self.client.log_epochs(self.run.id, self.pending, tail=1))
        except AdvisorUnavailable as exc:
            self._back_off()
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

    def _reachable(self) -> None:
        """The service answered: the next try goes at once, and a later back-off starts short."""
        self._backoff, self._next_try = self._retry[0], 0.0

    def _back_off(self) -> None:
        """The service is away: the next try waits, twice as long as the last, up to
        ``retry_s``'s longest."""
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._retry[1])

    def _whole(self, run: Run) -> Run:
        """An append's answer with every evaluation the service holds: those it held before
        and those just sent, up to the last one it answers (read back whole if they do not
        add up)."""
        assert self.run is not None
        last = run.epochs[-1]["epoch"] if run.epochs else None
        sent = [e for e in self.pending if last is not None and e["epoch"] <= last]
        held = [*self.run.epochs, *map(dict, sent)]
        if len(held) != run.n_epochs:
            return self.client.run(run.id)
        return replace(run, epochs=held)

    def _resync(self) -> None:
        """A post whose answer was lost did arrive: keep only what the service lacks."""
        assert self.run is not None
        self._accept(self.client.run(self.run.id))

    def _accept(self, run: Run) -> None:
        self.run = run
        last = run.epochs[-1]["epoch"] if run.epochs else -1
        self.pending = [e for e in self.pending if e["epoch"] > last]
        self._reachable()
        if self._said_unreachable:
            self._said_unreachable = False
            self._say("service reachable again; reporting resumed")
        if run.n_epochs != self._judged:  # a new diagnosis, not the same one read again
            self._judged = run.n_epochs
            self.live.see(run.raw.get("diagnosis"))
        if self.stop_when_overfitting and self.live.stopped and not self.should_stop:
            self.should_stop = True
            self._say(
                f"stopping: {run.verdict}; keep the weights of {self.where(self.stop_epoch)} "
                f"({self.client.page_url(run)})"
            )


def _criterion_value(record: Mapping[str, Any], criterion: str) -> float | None:
    """An evaluation's value of the criterion the diagnosis judged by."""
    if criterion == "valid_loss":
        return float(record["valid_loss"])
    value = (record.get("metrics") or {}).get(criterion)
    return float(value) if value is not None else None


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
        if self.stop_when_overfitting and running_trial() is not None:
            # Nor do the callbacks copy weights for a stop that will not come.
            _no_live_stop(_say)
            self.stop_when_overfitting = False
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
        self.copies: dict[EpochNumber, W] = {}

    def after_epoch(self, epoch: EpochNumber) -> None:
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
