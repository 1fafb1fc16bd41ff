"""Every API call once, as data: the request to make and how to read its answer. The
synchronous and the asynchronous client both send these, so neither repeats the other."""

import contextlib
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, SupportsFloat, SupportsIndex, TypeVar

import httpx

from overfit_advisor.errors import AdvisorError, AdvisorUnavailable
from overfit_advisor.types import ClaimedTrial, EpochNumber, Lineage, Run, Verification

T = TypeVar("T")
Epoch = Mapping[str, Any]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Any], T]
    body: Any = None
    query: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    # Seconds to wait for the answer, where the client's own timeout would not do (a long poll).
    timeout: float | None = None


def answer(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer, or the service's refusal as an exception naming its field."""
    if response.status_code < 400:
        # 204 (no trial to claim, a hand-in taken) has no body: the reader gets None.
        return call.read(response.json() if response.content else None)
    try:
        detail = response.json()
    except ValueError:
        detail = {"message": response.text or response.reason_phrase}
    message = str(detail.get("message") or response.reason_phrase)
    if response.status_code >= 500:
        raise AdvisorUnavailable(message, response.status_code)
    # Validation errors list each field; the first one names the field to fix.
    errors = detail.get("detail")
    field = detail.get("field") or (errors[0].get("field") if isinstance(errors, list) else None)
    raise AdvisorError(response.status_code, message, field)


def epoch_number(epoch: SupportsIndex | float) -> EpochNumber:
    """An epoch as the service takes it: integers (numpy's too) stay integers, anything else is
    a float (Hugging Face's fractional ``state.epoch`` between epochs)."""
    if not isinstance(epoch, float):
        with contextlib.suppress(TypeError):  # a float tensor has __index__, and it raises
            return operator.index(epoch)
    return float(epoch)


def epoch_record(
    epoch: SupportsIndex | float,
    train_loss: SupportsFloat | None,
    valid_loss: SupportsFloat,
    *,
    step: SupportsIndex | None = None,
    lr: SupportsFloat | None = None,
    **metrics: SupportsFloat,
) -> dict[str, Any]:
    """One evaluation as the service takes it (numpy and torch scalars converted). ``train_loss``
    None: no training loss was logged since the previous evaluation; ``step``: the global step
    of an evaluation made every so many steps; ``lr``: the learning rate at it. ``step`` and
    ``lr`` are therefore not metric names."""
    record: dict[str, Any] = {
        "epoch": epoch_number(epoch),
        "train_loss": None if train_loss is None else float(train_loss),
        "valid_loss": float(valid_loss),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    if step is not None:
        record["step"] = operator.index(step)
    if lr is not None:
        record["lr"] = float(lr)
    return record


def plain(value: Any) -> Any:
    """``value`` with numpy's and torch's scalars (in mappings and sequences too) as the Python
    numbers and booleans they hold: the service takes JSON's types strictly, and JSON has no
    others."""
    if isinstance(value, Mapping):
        return {key: plain(member) for key, member in value.items()}
    if isinstance(value, list | tuple):
        return [plain(member) for member in value]
    if not isinstance(value, str | int | float) and callable(getattr(value, "item", None)):
        return value.item()
    return value


def _report_body(name: str, epochs: Sequence[Epoch], fields: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "epochs": plain(list(epochs))}
    metric = fields.get("metric")
    if isinstance(metric, str):  # "accuracy" is short for {"name": "accuracy"}
        fields = {**fields, "metric": {"name": metric}}
    body.update({k: plain(v) for k, v in fields.items() if v is not None})
    return body


def report(
    name: str, epochs: Sequence[Epoch] = (), idempotency_key: str | None = None, **fields: Any
) -> Call[Run]:
    """A whole run, or its start (no epochs yet). ``fields``: ``metric`` (a name or
    ``{"name", "higher_is_better"}``), ``model``, ``data``, ``constraints``, ``recipe``,
    ``params``, ``tags``, ``parent_id``, ``applied_rung``, ``project``, ``task``. The same
    ``idempotency_key`` sent again answers the run it created the first time."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return Call("POST", "/api/v1/runs", Run.of, _report_body(name, epochs, fields), None, headers)


def log_epochs(run_id: int, epochs: Sequence[Epoch], tail: int | None = None) -> Call[Run]:
    """Append evaluations; ``tail``: answer only the run's last ``tail`` epochs (the diagnosis
    still reads them all), where the caller keeps the rest."""
    query = None if tail is None else {"tail": tail}
    return Call(
        "POST", f"/api/v1/runs/{run_id}/epochs", Run.of, {"epochs": plain(list(epochs))}, query
    )


def log_epoch(
    run_id: int,
    epoch: SupportsIndex | float,
    train_loss: SupportsFloat | None,
    valid_loss: SupportsFloat,
    *,
    step: SupportsIndex | None = None,
    lr: SupportsFloat | None = None,
    **metrics: SupportsFloat,
) -> Call[Run]:
    record = epoch_record(epoch, train_loss, valid_loss, step=step, lr=lr, **metrics)
    return log_epochs(run_id, [record])


def finish_run(run_id: int) -> Call[Run]:
    """Training is over: the run diagnosed as finished, every evaluation judged at once, not
    as the last look of a run in progress."""
    return Call("POST", f"/api/v1/runs/{run_id}/finish", Run.of)


def run(run_id: int) -> Call[Run]:
    return Call("GET", f"/api/v1/runs/{run_id}", Run.of)


def runs_page(cursor: str | None = None, **filters: Any) -> Call[tuple[list[Run], str | None]]:
    """One page of the history; ``filters``: ``verdict``, ``rung``, ``name``, ``tag``,
    ``project``, ``created_after``, ``created_before``, ``order``, ``limit``."""
    query = {k: v for k, v in {**filters, "cursor": cursor}.items() if v is not None}
    return Call(
        "GET",
        "/api/v1/runs",
        lambda page: ([Run.of(r) for r in page["items"]], page.get("next_cursor")),
        query=query,
    )


def lineage(run_id: int) -> Call[Lineage]:
    return Call("GET", f"/api/v1/runs/{run_id}/lineage", Lineage.of)


def _count(n: SupportsIndex | None) -> int | None:
    return None if n is None else operator.index(n)


def _seeds(seeds: SupportsIndex | Iterable[SupportsIndex] | None) -> int | list[int] | None:
    if isinstance(seeds, Iterable):
        return [operator.index(s) for s in seeds]
    return _count(seeds)


def verify(
    run_id: int,
    rung: str | None = None,
    seeds: SupportsIndex | Iterable[SupportsIndex] | None = None,
    epochs: SupportsIndex | None = None,
    device: str = "auto",
    *,
    min_seeds: SupportsIndex | None = None,
    max_seeds: SupportsIndex | None = None,
    criterion: str | None = None,
    smallest_effect: SupportsFloat | None = None,
    rungs: Sequence[str] | None = None,
    race: SupportsIndex | None = None,
) -> Call[Verification]:
    """Check ``rung`` (default: the recommended one) with seed pairs until the verdict settles
    (``min_seeds`` to ``max_seeds``, or the ``seeds`` listed), judged on the ``criterion``
    ("best" epoch, or "final"); or race ``rungs`` (or the next ``race`` open rungs) against one
    baseline. Unset arguments take the service's defaults; numbers may be numpy's too."""
    body: dict[str, Any] = {
        "rung": rung,
        "seeds": _seeds(seeds),
        "epochs": _count(epochs),
        "device": device,
        "min_seeds": _count(min_seeds),
        "max_seeds": _count(max_seeds),
        "criterion": criterion,
        "smallest_effect": None if smallest_effect is None else float(smallest_effect),
        "rungs": list(rungs) if rungs is not None else None,
        "race": _count(race),
    }
    return Call(
        "POST",
        f"/api/v1/runs/{run_id}/verifications",
        Verification.of,
        {k: v for k, v in body.items() if v is not None},
    )


def verification(verification_id: int) -> Call[Verification]:
    return Call("GET", f"/api/v1/verifications/{verification_id}", Verification.of)


def cancel(verification_id: int) -> Call[Verification]:
    return Call("POST", f"/api/v1/verifications/{verification_id}/cancel", Verification.of)


# --- the worker API, as the agent speaks it: script trials only ---------------------------------

TRIALS = "/api/v1/trials"
# How long the service holds a claim open at most; the answer is awaited this long and more.
LONG_POLL_S = 20.0
# The longest failure message the service takes.
ERROR_MAX = 4000


def _handed_in(_: Any) -> None:
    return None


def claim(
    worker: str, devices: SupportsIndex = 1, wait_s: float = 0.0, project: str | None = None
) -> Call[ClaimedTrial | None]:
    """The oldest queued script trial (of ``project``, or of the token's project) whose devices
    fit, leased to ``worker``; waits up to ``wait_s`` (at most 20 s) for one. None: none came."""
    wait = min(max(float(wait_s), 0.0), LONG_POLL_S)
    body: dict[str, Any] = {"worker": worker, "devices": max(operator.index(devices), 1),
                            "wait_s": wait, "runner": "script"}  # fmt: skip
    if project is not None:
        body["project"] = project
    return Call(
        "POST",
        f"{TRIALS}/claim",
        lambda found: None if found is None else ClaimedTrial.of(found),
        body,
        timeout=wait + 30.0,
    )


def heartbeat(trial_id: int, worker: str, curve: Sequence[Epoch] | None) -> Call[bool]:
    """Renew the lease with the evaluations so far (None: the lease alone); answers whether to
    stop (409 once the lease is lost: stop, and hand in nothing)."""
    body: dict[str, Any] = {"worker": worker}
    if curve is not None:
        body["curve"] = plain(list(curve))
    # Short: a beat that hangs would hold up stopping the script; the next beat tries again.
    return Call("POST", f"{TRIALS}/{trial_id}/heartbeat", lambda a: bool(a["stop"]), body,
                timeout=10.0)  # fmt: skip


def complete(
    trial_id: int,
    worker: str,
    curve: Sequence[Epoch],
    duration_s: float,
    device: str,
    n_train: SupportsIndex | None = None,
) -> Call[None]:
    """Hand in the evaluations trained: all of them, or those until the service said stop."""
    body = {"worker": worker, "curve": plain(list(curve)), "n_train": _count(n_train),
            "duration_s": max(float(duration_s), 0.0), "device": device}  # fmt: skip
    return Call("POST", f"{TRIALS}/{trial_id}/complete", _handed_in, body)


def fail(trial_id: int, worker: str, error: str, final: bool = False) -> Call[None]:
    """The training failed: queued again within its attempts, unless ``final``. The service
    takes at most :data:`ERROR_MAX` characters."""
    body = {"worker": worker, "error": error[:ERROR_MAX] or "failed", "final": final}
    return Call("POST", f"{TRIALS}/{trial_id}/fail", _handed_in, body)


def release(trial_id: int, worker: str) -> Call[None]:
    """Hand the trial back untrained (the agent is stopping): the attempt does not count."""
    return Call("POST", f"{TRIALS}/{trial_id}/release", _handed_in, {"worker": worker})
