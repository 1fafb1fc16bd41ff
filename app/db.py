"""Engine and sessions: one storage layer that speaks SQLite and PostgreSQL alike."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
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


def serialize_writes(engine: Engine, timeout_s: float) -> None:
    """Let one connection of this process write to SQLite at a time.

    SQLite has one writer. Threads that race for it fall into SQLite's busy handler, which
    sleeps in growing steps (up to 100 ms) and is not fair, so under concurrent requests some
    wait for seconds. A Python lock taken at a transaction's first INSERT/UPDATE/DELETE and
    released when it ends queues them fairly instead; other processes still meet the busy
    timeout. Connection.info is the pooled DBAPI connection's, so every exit path sees the flag.
    """
    lock = threading.Lock()

    @event.listens_for(engine, "before_cursor_execute")
    def _acquire(
        conn: Connection, _cur: Any, _sql: str, _params: Any, context: Any, _many: bool
    ) -> None:
        if conn.info.get(_HOLDS_WRITE_LOCK) or context is None:
            return
        if not (context.isinsert or context.isupdate or context.isdelete):
            return
        if not lock.acquire(timeout=timeout_s):
            raise TimeoutError(f"no SQLite write slot within {timeout_s:g} s")
        conn.info[_HOLDS_WRITE_LOCK] = True

    def _release(info: dict[Any, Any]) -> None:
        if info.pop(_HOLDS_WRITE_LOCK, False):
            lock.release()

    event.listen(engine, "commit", lambda conn: _release(conn.info))
    event.listen(engine, "rollback", lambda conn: _release(conn.info))
    # A connection handed back without commit or rollback is reset by the pool.
    event.listen(engine.pool, "reset", lambda _dbapi, record, *_: _release(record.info))


class Database:
    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout_ms=busy_timeout_ms)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        if url.startswith("sqlite"):
            serialize_writes(self.engine, busy_timeout_ms / 1000)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self.sessionmaker() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
