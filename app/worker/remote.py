"""Trials over the service's worker API (``/api/v1/trials/...``): ``advisor worker --server URL``
trains with no database settings and no database access, holding only a worker token (the
fleet's, or a project's, which limits it to that project's trials). The claim long-polls, so an
idle worker starts a queued trial within a fraction of a second of its queueing."""

import logging
import time
from typing import Any

import httpx

from app.services.trials import Claimed, LeaseLost

log = logging.getLogger("advisor.worker")
# One line per request (a heartbeat an epoch) would drown the worker's own log.
logging.getLogger("httpx").setLevel(logging.WARNING)
# How long one long-poll waits at most on the server's side; the client allows for it.
LONG_POLL_S = 20.0
# How long a hand-in (complete, fail, release) keeps trying while the service cannot be reached
# or answers that it is unavailable (restarting, its database busy): a trained curve is not
# thrown away over a restart. A heartbeat is not retried: the next one tries again.
HAND_IN_RETRY_S = 60.0
UNAVAILABLE = (502, 503, 504)


class RemoteSource:
    def __init__(self, url: str, token: str | None, *, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=url.rstrip("/") + "/api/v1/trials", headers=headers, timeout=timeout_s
        )

    def _post(
        self, path: str, body: dict[str, Any], *, wait_s: float = 0.0, retry_s: float = 0.0
    ) -> httpx.Response:
        timeout = self.http.timeout.read or 30.0
        deadline, pause = time.monotonic() + retry_s, 0.25
        while True:
            try:
                answer = self.http.post(path, json=body, timeout=timeout + wait_s)
                if answer.status_code not in UNAVAILABLE or time.monotonic() + pause > deadline:
                    break
                why = f"answered {answer.status_code}"
            except httpx.TransportError as exc:
                if time.monotonic() + pause > deadline:
                    raise
                why = f"unreachable ({type(exc).__name__})"
            log.warning("%s: the service %s; trying again in %.1f s", path, why, pause)
            time.sleep(pause)
            pause = min(pause * 2, 4.0)
        if answer.status_code in (404, 409):
            # The trial is not this worker's (any more): taken over, ended, or not its project's.
            raise LeaseLost(answer.json().get("message", answer.text))
        answer.raise_for_status()
        return answer

    def claim(self, worker: str, devices: int, wait_s: float) -> Claimed | None:
        wait = min(max(wait_s, 0.0), LONG_POLL_S)
        answer = self._post("/claim", {"worker": worker, "devices": devices, "wait_s": wait},
                            wait_s=wait)  # fmt: skip
        if answer.status_code == 204:
            return None
        return Claimed(**answer.json())

    def heartbeat(self, trial: Claimed, worker: str, curve: list[dict[str, Any]] | None) -> bool:
        body: dict[str, Any] = {"worker": worker}
        if curve is not None:
            body["curve"] = curve
        return bool(self._post(f"/{trial.id}/heartbeat", body).json()["stop"])

    def complete(self, trial: Claimed, worker: str, outcome: dict[str, Any]) -> None:
        self._post(f"/{trial.id}/complete", {"worker": worker, **outcome}, retry_s=HAND_IN_RETRY_S)

    def fail(self, trial: Claimed, worker: str, error: str, *, final: bool) -> None:
        body = {"worker": worker, "error": error[:4000], "final": final}
        self._post(f"/{trial.id}/fail", body, retry_s=HAND_IN_RETRY_S)

    def release(self, trial: Claimed, worker: str) -> None:
        self._post(f"/{trial.id}/release", {"worker": worker}, retry_s=HAND_IN_RETRY_S)

    def close(self) -> None:
        self.http.close()
