"""Engine and sessions: one storage layer that speaks SQLite and PostgreSQL alike."""

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, *, busy_timeout_ms: int = 5000, **kwargs: Any) -> Engine:
    # orjson for the JSON columns: epochs and diagnoses are most of every row.
    kwargs.update(json_serializer=_json_dumps, json_deserializer=orjson.loads)
    if url.startswith("sqlite"):
        # The API answers from a thread pool; SQLite connections may cross threads under WAL.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets readers run beside the single writer; NORMAL sync is durable in WAL mode
            # except for the last transactions on power loss, the usual trade for a local tool.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


_HOLDS_WRITE_LOCK = "holds_sqlite_write_lock"


class WriteSlot:
    """The one SQLite writer's slot, shared by the threads of this process and, through a lock
    file beside the database, by every process on the machine.

    Without it, writers race inside SQLite's busy handler, which sleeps in growing steps (up to
    100 ms) and is not fair: under concurrent requests some wait for seconds while the CPU idles.
    Here threads queue on a lock and processes on ``flock``, polled with sub-millisecond sleeps.
    """

    def __init__(self, lock_file: Path | None, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._threads = threading.Lock()
        self._fd = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o600) if lock_file else None

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        if not self._threads.acquire(timeout=self.timeout_s):
            raise TimeoutError(f"no SQLite write slot within {self.timeout_s:g} s")
        if self._fd is None:
            return
        delay = 1e-4
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._threads.release()
                    raise TimeoutError(
                        f"no SQLite write slot within {self.timeout_s:g} s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 2e-3)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


def serialize_writes(engine: Engine, slot: WriteSlot) -> None:
    """Hold ``slot`` from a transaction's first INSERT/UPDATE/DELETE until it ends.

    Connection.info is the pooled DBAPI connection's, so every way out — commit, rollback, or the
    pool's reset of a connection handed back without either — sees the flag and releases.
    """

    @event.listens_for(engine, "before_cursor_execute")
    def _acquire(
        conn: Connection, _cur: Any, _sql: str, _params: Any, context: Any, _many: bool
    ) -> None:
        if conn.info.get(_HOLDS_WRITE_LOCK) or context is None:
            return
        if not (context.isinsert or context.isupdate or context.isdelete):
            return
        slot.acquire()
        conn.info[_HOLDS_WRITE_LOCK] = True

    def _release(info: dict[Any, Any]) -> None:
        if info.pop(_HOLDS_WRITE_LOCK, False):
            slot.release()

    event.listen(engine, "commit", lambda conn: _release(conn.info))
    event.listen(engine, "rollback", lambda conn: _release(conn.info))

    @event.listens_for(engine.pool, "reset")
    def _on_reset(_dbapi: Any, record: Any, _state: Any) -> None:
        _release(record.info)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for in-memory databases."""
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


class Database:
    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout_ms=busy_timeout_ms)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        if url.startswith("sqlite"):
            path = sqlite_file(url)
            lock_file = path.with_name(path.name + "-writer.lock") if path else None
            serialize_writes(self.engine, WriteSlot(lock_file, busy_timeout_ms / 1000))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self.sessionmaker() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
