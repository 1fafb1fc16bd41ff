"""Fresh, migrated databases for tests: a SQLite file, or a uniquely named database on the local
PostgreSQL server (127.0.0.1:5432, trust auth) that is dropped afterwards."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, text

from app.migrate import upgrade

PG_ADMIN = os.environ.get("ADVISOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


def postgres_unreachable() -> str | None:
    """None when the local PostgreSQL answers, else the loud reason a test is skipped."""
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return (
            f"POSTGRESQL UNREACHABLE at {PG_ADMIN}: {exc}. PostgreSQL tests did NOT run; "
            "start the server (see .ci/run) to cover the PostgreSQL backend."
        )


@contextmanager
def fresh_database(backend: str, tmp: Path, *, migrate: bool = True) -> Iterator[str]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'advisor-{uuid.uuid4().hex[:8]}.db'}"
        if migrate:
            upgrade(url)
        yield url
        return
    name = f"advisor_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


TABLES = ("rung_verdicts", "trials", "verifications", "run_tags", "runs", "api_tokens", "projects")


def wipe(url: str) -> None:
    """Delete every row, children first, so the next test starts from an empty schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()
