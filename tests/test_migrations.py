"""Alembic owns the schema: empty -> head on both backends, and the models match what it built."""

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import head_revision, upgrade
from app.models import Base
from tests.databases import BACKENDS, fresh_database


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_from_empty_to_head_matches_the_models(
    backend: str, tmp_path: Path, pg_reason: str | None
) -> None:
    if backend == "postgresql" and pg_reason:
        pytest.skip(pg_reason)
    with fresh_database(backend, tmp_path, migrate=False) as url:
        engine = create_engine(url)
        assert inspect(engine).get_table_names() == []
        upgrade(url)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert ctx.get_current_revision() == head_revision()
            assert compare_metadata(ctx, Base.metadata) == []
        assert {"projects", "api_tokens", "runs", "verifications"} <= set(
            inspect(engine).get_table_names()
        )
        upgrade(url)  # idempotent at head
        engine.dispose()


def test_readyz_reports_an_unmigrated_database(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    url = f"sqlite:///{tmp_path / 'half.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'older'")
    engine.dispose()
    with TestClient(create_app(Settings(database_url=url))) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["revision"] == "older"


def test_readyz_reports_an_unreachable_database() -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    # Port 9 (discard) on loopback has no PostgreSQL: connecting fails at once.
    app = create_app(Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none"))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["database"].startswith("unreachable")
