"""The epochs of runs in progress, kept in this process from one append to the next.

A callback appends one evaluation at a time, and reading a long run's epochs back from the
database (the JSON of every evaluation) would make each append cost in proportion to the run.
An append that commits leaves the epochs it wrote here, stamped with the row's version and
creation time; the next append to the run takes them from here while the row still carries that
stamp. Written by anyone else since (another server process, a direct write), the row's version
differs and the epochs are read from the database; an append that rolls back leaves nothing
here. As in Optuna's cached RDB storage, the database stays the truth: this only spares reading
it back.
"""

import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

# What identifies the row as it was written: its id, its version and its creation time (a run
# created again under a reused id, or in a database made afresh, is another row).
Stamp = tuple[int, int, datetime]

_CACHE = "epochs_cache"
_WRITTEN = "epochs_written"


def stamp(row: Mapping[str, Any]) -> Stamp:
    return row["id"], row["version"], row["created_at"]


class EpochsCache:
    """The latest epochs this process committed, per run, the least recently used run dropped
    first once more than ``max_evaluations`` are held in all."""

    def __init__(self, max_evaluations: int = 100_000) -> None:
        self.max_evaluations = max_evaluations
        self._runs: OrderedDict[int, tuple[Stamp, list[dict[str, Any]]]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, key: Stamp) -> list[dict[str, Any]] | None:
        with self._lock:
            entry = self._runs.get(key[0])
            if entry is None or entry[0] != key:
                return None
            self._runs.move_to_end(key[0])
            return entry[1]

    def put(self, key: Stamp, epochs: list[dict[str, Any]]) -> None:
        with self._lock:
            old = self._runs.pop(key[0], None)
            if old is not None:
                self._held -= len(old[1])
            if len(epochs) > self.max_evaluations:
                return
            self._runs[key[0]] = (key, epochs)
            self._held += len(epochs)
            while self._held > self.max_evaluations:
                _, (_, dropped) = self._runs.popitem(last=False)
                self._held -= len(dropped)

    def __len__(self) -> int:
        return len(self._runs)


def attach(sessions: sessionmaker[Session], cache: EpochsCache) -> None:
    """Sessions from ``sessions`` carry ``cache``; what :func:`written` records in one of them
    reaches the cache when (only when) its transaction commits."""
    sessions.configure(info={_CACHE: cache})

    @event.listens_for(sessions, "after_commit")
    def _committed(session: Session) -> None:
        for key, epochs in session.info.pop(_WRITTEN, ()):
            cache.put(key, epochs)

    @event.listens_for(sessions, "after_rollback")
    def _rolled_back(session: Session) -> None:
        session.info.pop(_WRITTEN, None)


def cached(session: Session, key: Stamp) -> list[dict[str, Any]] | None:
    """The epochs of the row stamped ``key``, when this process committed them last."""
    cache: EpochsCache | None = session.info.get(_CACHE)
    return None if cache is None else cache.get(key)


def written(session: Session, row: Mapping[str, Any]) -> None:
    """``row``'s epochs were written in this session's transaction, as ``row`` is stamped."""
    if _CACHE in session.info:
        session.info.setdefault(_WRITTEN, []).append((stamp(row), row["epochs"]))
