"""Trials straight from the database: the embedded worker's source, and a fleet's that is given
database credentials. Idle workers wake on NOTIFY (PostgreSQL) or poll."""

import threading
from typing import Any

from app.db import Database
from app.services import trials
from app.services.trials import Claimed
from app.wakeup import Wakeup


class LocalSource:
    def __init__(self, db: Database, *, lease_s: float, listen: bool = True) -> None:
        self.db, self.lease_s = db, lease_s
        self.idle = threading.Event()
        # False: poll only, even on PostgreSQL (to measure what NOTIFY saves).
        self.wakeup = Wakeup(db, self.idle, listen=listen)

    def claim(self, worker: str, devices: int, wait_s: float) -> Claimed | None:
        found = self._claim(worker, devices)
        if found is None:
            self.wakeup.wait(wait_s)
            found = self._claim(worker, devices)
        return found

    def _claim(self, worker: str, devices: int) -> Claimed | None:
        with self.db.session() as session:
            trials.advance_stalled(session)
        with self.db.session() as session:
            return trials.claim(session, worker, devices=devices, lease_s=self.lease_s)

    def heartbeat(self, trial: Claimed, worker: str, curve: list[dict[str, Any]] | None) -> bool:
        with self.db.session() as session:
            return trials.heartbeat(session, trial.id, worker, lease_s=self.lease_s, curve=curve)

    def complete(self, trial: Claimed, worker: str, outcome: dict[str, Any]) -> None:
        with self.db.session() as session:
            trials.complete(session, trial.id, worker, **outcome)

    def fail(self, trial: Claimed, worker: str, error: str, *, final: bool) -> None:
        with self.db.session() as session:
            trials.fail(session, trial.id, worker, error=error, final=final)

    def release(self, trial: Claimed, worker: str) -> None:
        with self.db.session() as session:
            trials.release(session, trial.id, worker)

    def close(self) -> None:
        self.idle.set()
        self.wakeup.close()
