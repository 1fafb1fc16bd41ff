"""The synchronous and asynchronous clients: the same calls (:mod:`overfit_advisor.calls`) sent
over ``httpx.Client`` or ``httpx.AsyncClient``."""

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
from tqdm import tqdm

from overfit_advisor import calls
from overfit_advisor.errors import AdvisorUnavailable
from overfit_advisor.types import Run, Verification


def _request(call: calls.Call[Any]) -> dict[str, Any]:
    """What the sync and async clients send for ``call``: its own timeout (a long poll's),
    else the client's."""
    timeout = httpx.USE_CLIENT_DEFAULT if call.timeout is None else call.timeout
    return {
        "method": call.method,
        "url": call.path,
        "json": call.body,
        "params": call.query,
        "headers": call.headers,
        "timeout": timeout,
    }


P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"


def _settings(url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    base = (url or os.environ.get("ADVISOR_URL") or DEFAULT_URL).rstrip("/")
    token = token if token is not None else os.environ.get("ADVISOR_TOKEN")
    return base, {"Authorization": f"Bearer {token}"} if token else {}


def _sync(build: Callable[P, calls.Call[T]]) -> Callable[Concatenate["Client", P], T]:
    def method(self: "Client", /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.send(build(*args, **kwargs))

    method.__doc__ = build.__doc__
    return method


def _async(
    build: Callable[P, calls.Call[T]],
) -> Callable[Concatenate["AsyncClient", P], Coroutine[Any, Any, T]]:
    async def method(self: "AsyncClient", /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.send(build(*args, **kwargs))

    method.__doc__ = build.__doc__
    return method


class _Progress:
    """A verification's progress as a bar over all epochs of all its trainings."""

    def __init__(self, job: Verification, show: bool) -> None:
        self.bar = tqdm(total=None, desc=f"verifying {job.rung}", unit="epoch", disable=not show)

    def update(self, job: Verification) -> None:
        p = job.progress
        if p.get("epochs_total"):
            self.bar.total = p["epochs_total"]
            self.bar.n = p.get("epochs_done", 0)
            self.bar.set_postfix_str(
                f"{p.get('role', '')} seed {p.get('seed', '')} · trial {p.get('trial')}/"
                f"{p.get('trials')} · {job.status}",
                refresh=False,
            )
            self.bar.refresh()

    def close(self, job: Verification) -> None:
        self.bar.set_postfix_str(f"{job.status}, {job.verdict or 'no verdict'}")
        self.bar.close()


class _Service:
    url: str

    def page_url(self, run: Run | int) -> str:
        """The run's page on the service, for people."""
        return f"{self.url}/runs/{run if isinstance(run, int) else run.id}"


class Client(_Service):
    """``Client(url, token)``; both default to ``ADVISOR_URL`` and ``ADVISOR_TOKEN``. Errors are
    :class:`~overfit_advisor.AdvisorError` (refused, with the service's message and field) and
    :class:`~overfit_advisor.AdvisorUnavailable` (unreachable or failing: worth retrying)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url, headers = _settings(url, token)
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def send(self, call: calls.Call[T]) -> T:
        try:
            response = self._http.request(**_request(call))
        except httpx.HTTPError as exc:
            raise AdvisorUnavailable(f"{self.url}: {exc}") from exc
        return calls.answer(call, response)

    report = _sync(calls.report)
    start_run = _sync(calls.report)
    log_epoch = _sync(calls.log_epoch)
    log_epochs = _sync(calls.log_epochs)
    finish_run = _sync(calls.finish_run)
    run = _sync(calls.run)
    lineage = _sync(calls.lineage)
    verify = _sync(calls.verify)
    verification = _sync(calls.verification)
    cancel = _sync(calls.cancel)
    # The worker API, for the agent (a project's token or the fleet's worker token).
    claim = _sync(calls.claim)
    heartbeat = _sync(calls.heartbeat)
    complete = _sync(calls.complete)
    fail = _sync(calls.fail)
    release = _sync(calls.release)

    def runs(self, **filters: Any) -> Iterator[Run]:
        """Every run matching ``filters``, newest first, page after page."""
        cursor = None
        while True:
            page, cursor = self.send(calls.runs_page(cursor, **filters))
            yield from page
            if cursor is None:
                return

    def wait(
        self, verification_id: int, progress: bool = True, poll_s: float = 1.0
    ) -> Verification:
        """Poll until the verification ends; a progress bar over its epochs unless told not."""
        job = self.verification(verification_id)
        bar = _Progress(job, progress)
        while not job.done:
            bar.update(job)
            time.sleep(poll_s)
            job = self.verification(verification_id)
        bar.close(job)
        return job

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Service):
    """The same calls as :class:`Client`, awaited."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.url, headers = _settings(url, token)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    async def send(self, call: calls.Call[T]) -> T:
        try:
            response = await self._http.request(**_request(call))
        except httpx.HTTPError as exc:
            raise AdvisorUnavailable(f"{self.url}: {exc}") from exc
        return calls.answer(call, response)

    report = _async(calls.report)
    start_run = _async(calls.report)
    log_epoch = _async(calls.log_epoch)
    log_epochs = _async(calls.log_epochs)
    finish_run = _async(calls.finish_run)
    run = _async(calls.run)
    lineage = _async(calls.lineage)
    verify = _async(calls.verify)
    verification = _async(calls.verification)
    cancel = _async(calls.cancel)
    # The worker API, for the agent (a project's token or the fleet's worker token).
    claim = _async(calls.claim)
    heartbeat = _async(calls.heartbeat)
    complete = _async(calls.complete)
    fail = _async(calls.fail)
    release = _async(calls.release)

    async def runs(self, **filters: Any) -> AsyncIterator[Run]:
        cursor = None
        while True:
            page, cursor = await self.send(calls.runs_page(cursor, **filters))
            for run in page:
                yield run
            if cursor is None:
                return

    async def wait(
        self, verification_id: int, progress: bool = True, poll_s: float = 1.0
    ) -> Verification:
        job = await self.verification(verification_id)
        bar = _Progress(job, progress)
        while not job.done:
            bar.update(job)
            await asyncio.sleep(poll_s)
            job = await self.verification(verification_id)
        bar.close(job)
        return job

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
