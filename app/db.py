"""Engine and sessions: one storage layer that speaks SQLite and PostgreSQL alike."""

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.orm import Session, sessionmaker

from app.epochs_cache import EpochsCache, attach


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
_WROTE = "advisor_wrote"

SQLITE_BUSY, SQLITE_READONLY, SQLITE_FULL, SQLITE_CANTOPEN = 5, 8, 13, 14


class StorageUnavailable(Exception):
    """The database cannot be used from here (its folder is missing or read-only, ...)."""


class WriteSlotTimeout(TimeoutError):
    """No SQLite write slot within the busy timeout: other writers held it all along."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the DBAPI error SQLAlchemy wrapped (``orig``), and their explicit causes
    (``raise ... from``; not every exception that happened to be handled meanwhile)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend((getattr(e, "orig", None), e.__cause__))


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full") or PostgreSQL's disk_full (53100)."""
    for e in _causes(exc):
        if isinstance(e, psycopg.errors.DiskFull):
            return True
        if isinstance(e, sqlite3.Error) and (
            _sqlite_code(e) == SQLITE_FULL or "database or disk is full" in str(e)
        ):
            return True
    return False


def storage_error(exc: BaseException) -> tuple[int, str] | None:
    """The HTTP status and message for a failure of the storage itself (not of a request):
    507 when the database or its disk is full, 503 when the database cannot be opened, is
    read-only, unreachable or busy; None for anything else."""
    if is_disk_full(exc):
        return 507, (
            "storage full: the database could not write (database or disk is full); nothing "
            "was stored — free space on the database's disk and retry"
        )
    for e in _causes(exc):
        if isinstance(e, StorageUnavailable):
            return 503, f"database unavailable: {e}"
        if isinstance(e, WriteSlotTimeout):
            return 503, f"database busy: {e}; retry"
        if isinstance(e, sqlite3.Error):
            code = _sqlite_code(e)
            if code in (SQLITE_READONLY, SQLITE_CANTOPEN):
                return 503, f"database unavailable: {e}"
            if code == SQLITE_BUSY:
                return 503, f"database busy: {e}; retry"
        # A psycopg error without SQLSTATE never reached the server: connecting failed.
        if isinstance(e, psycopg.OperationalError) and e.sqlstate is None:
            return 503, "database unavailable: cannot connect to PostgreSQL"
    return None


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
        self._lock_file = lock_file
        # Opened on the first write, not here: a server whose database folder is missing or
        # read-only still starts, and says why on /readyz.
        self._fd: int | None = None

    def _open(self) -> int | None:
        if self._fd is None and self._lock_file is not None:
            try:
                self._fd = os.open(self._lock_file, os.O_CREAT | os.O_RDWR, 0o600)
            except OSError as exc:
                raise StorageUnavailable(
                    f"cannot create the writer lock {self._lock_file}: {exc.strerror}"
                ) from exc
        return self._fd

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        if not self._threads.acquire(timeout=self.timeout_s):
            raise WriteSlotTimeout(f"no SQLite write slot within {self.timeout_s:g} s")
        try:
            fd = self._open()
        except StorageUnavailable:
            self._threads.release()
            raise
        if fd is None:
            return
        delay = 1e-4
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._threads.release()
                    raise WriteSlotTimeout(
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

    def _rolled_back(conn: Connection) -> None:
        try:
            info = conn.info
        except PendingRollbackError:
            # The statement that failed (a write slot never obtained, ...) invalidated the
            # transaction before it held the slot; the pool's reset releases anything held.
            return
        _release(info)

    event.listen(engine, "commit", lambda conn: _release(conn.info))
    event.listen(engine, "rollback", _rolled_back)

    @event.listens_for(engine.pool, "reset")
    def _on_reset(_dbapi: Any, record: Any, _state: Any) -> None:
        _release(record.info)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for in-memory databases."""
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


@dataclass(frozen=True, slots=True)
class WriteFailure:
    at: datetime
    message: str


# How much room a write needs for /readyz to call the storage usable again after it was full.
ROOM_BYTES = 64 * 1024


class Database:
    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout_ms=busy_timeout_ms)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        # The epochs of runs being appended to, between appends (see app.epochs_cache).
        self.epochs = EpochsCache()
        attach(self.sessionmaker, self.epochs)
        self.path = sqlite_file(url) if url.startswith("sqlite") else None
        # The last write that failed for want of space, until a write succeeds again.
        self.write_failure: WriteFailure | None = None
        if url.startswith("sqlite"):
            path = self.path
            lock_file = path.with_name(path.name + "-writer.lock") if path else None
            serialize_writes(self.engine, WriteSlot(lock_file, busy_timeout_ms / 1000))
        self._watch_writes()

    def _watch_writes(self) -> None:
        """Remember a write that failed because the database or its disk is full (from any
        thread: requests and the embedded worker), and forget it when a write commits."""

        @event.listens_for(self.engine, "handle_error")
        def _failed(context: ExceptionContext) -> None:
            if is_disk_full(context.original_exception):
                first_line = str(context.original_exception).splitlines()[0]
                self.write_failure = WriteFailure(datetime.now(UTC), first_line)

        @event.listens_for(self.engine, "before_cursor_execute")
        def _writing(
            conn: Connection, _cur: Any, _sql: str, _params: Any, context: Any, _many: bool
        ) -> None:
            if context is not None and (context.isinsert or context.isupdate or context.isdelete):
                conn.info[_WROTE] = True

        # Fires just before the DBAPI commit; a commit that then fails records its failure
        # again through handle_error.
        @event.listens_for(self.engine, "commit")
        def _committed(conn: Connection) -> None:
            if conn.info.pop(_WROTE, False):
                self.write_failure = None

        @event.listens_for(self.engine, "rollback")
        def _rolled_back(conn: Connection) -> None:
            conn.info.pop(_WROTE, None)

    def folder_problem(self) -> str | None:
        """Why a SQLite database's folder cannot hold it (missing, not a folder, read-only)."""
        if self.path is None:
            return None
        folder = self.path.parent
        if not folder.exists():
            return f"folder {folder} does not exist"
        if not folder.is_dir():
            return f"{folder} is not a folder"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"folder {folder} is not writable"
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            return f"file {self.path} is not readable and writable"
        return None

    def storage_problem(self) -> str | None:
        """None when writes may succeed; else why not. Only after a write failed for want of
        space is the storage probed: until then, or once a probe finds room, writes are
        presumed to work (so a full disk shows here within one failed write)."""
        failure = self.write_failure
        if failure is None:
            return None
        try:
            room = self._room()
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            room = None
        if room is None:
            since = failure.at.isoformat(timespec="seconds").replace("+00:00", "Z")
            return f"full: writes fail since {since} ({failure.message})"
        self.write_failure = None
        return None

    def _room(self) -> int | None:
        """Bytes a write can use now; None when that is less than ``ROOM_BYTES``.

        SQLite: the pages the database may still grow by (``max_page_count``, free pages) and
        the free space of its disk. PostgreSQL: rows worth ``ROOM_BYTES`` and more written to a
        temporary table inside a transaction that is rolled back — extending a table's file
        takes disk space at once, so this fails with disk_full when there is none.
        """
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:

                def pragma(name: str) -> int:
                    return int(conn.exec_driver_sql(f"PRAGMA {name}").scalar_one())

                pages = pragma("max_page_count") - pragma("page_count") + pragma("freelist_count")
                room = pages * pragma("page_size")
            if self.path is not None:
                disk = os.statvfs(self.path.parent)
                room = min(room, disk.f_bavail * disk.f_frsize)
            return room if room >= ROOM_BYTES else None
        with self.engine.connect() as conn, conn.begin() as transaction:
            conn.execute(text("CREATE TEMPORARY TABLE advisor_write_probe (n bigint)"))
            conn.execute(
                text("INSERT INTO advisor_write_probe SELECT g FROM generate_series(1, :n) g"),
                {"n": ROOM_BYTES // 32},  # rows of 40 bytes or more on their pages
            )
            transaction.rollback()
        return ROOM_BYTES

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self.sessionmaker() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
