"""Errors of the server and its storage: JSON with a request id, the connection kept, a full
disk answered 507 and shown on /readyz, and a missing database folder shown on /readyz.
/metrics and its tokens: test_metrics.py."""

import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from app.db import WriteFailure, storage_error
from app.main import create_app
from app.migrate import upgrade
from app.services import runs as runs_service
from app.settings import Settings
from tests.conftest import make_client, overfit_epochs
from tests.servers import free_port

# --- request ids and unexpected errors ------------------------------------------------------


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    ids = set()
    for r in (
        client.get("/healthz"),
        client.get("/api/v1/runs"),
        client.get("/api/v1/runs/12345"),
        client.get("/no/such/page"),
        client.post("/api/v1/runs", json={}),
    ):
        assert len(r.headers["x-request-id"]) == 32, r.headers
        ids.add(r.headers["x-request-id"])
    assert len(ids) == 5
    sane = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a:42"})
    assert sane.headers["x-request-id"] == "lb-7f3a:42"
    for insane in (b"x" * 129, b"two words", "ünïcode".encode()):
        r = client.get("/healthz", headers=[(b"X-Request-ID", insane)])
        assert re.fullmatch("[0-9a-f]{32}", r.headers["x-request-id"]), r.headers


def test_an_unexpected_error_answers_json_and_is_logged_under_its_request_id(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the unexpected")

    monkeypatch.setattr(runs_service, "list_runs", boom)
    with caplog.at_level(logging.ERROR, logger="advisor"):
        r = client.get("/api/v1/runs", headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"] == "req-500"
    assert "req-500" in body["message"]
    assert "the unexpected" not in body["message"]  # details stay in the log
    (record,) = [rec for rec in caplog.records if "req-500" in rec.getMessage()]
    assert record.exc_info is not None
    assert "the unexpected" in str(record.exc_info[1])
    assert client.get("/healthz").status_code == 200


def test_a_500_from_a_real_server_keeps_the_connection(tmp_path: Path) -> None:
    """Through uvicorn, as deployed: the 500 is JSON, its request id is in the log with the
    traceback, and the next request goes over the same keep-alive connection."""
    db_file = tmp_path / "broken.db"
    upgrade(f"sqlite:///{db_file}")
    with sqlite3.connect(db_file) as conn:  # damage the schema: listing by tag now fails
        conn.execute("DROP TABLE run_tags")
    conn.close()
    port = free_port()
    env = {**os.environ, "ADVISOR_DATABASE_URL": f"sqlite:///{db_file}",
           "ADVISOR_LOG_LEVEL": "warning", "ADVISOR_WORKER": "off"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    http.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        pytest.fail("advisor serve did not start")
                    time.sleep(0.2)

            def local_port(r: httpx.Response) -> int:
                return int(r.extensions["network_stream"].get_extra_info("client_addr")[1])

            before = http.get("/healthz")
            failed = http.get("/api/v1/runs", params={"tag": "pets"})
            after = http.get("/healthz")
            assert failed.status_code == 500, failed.text
            assert failed.headers["content-type"] == "application/json"
            request_id = failed.json()["request_id"]
            assert request_id == failed.headers["x-request-id"]
            assert "connection" not in failed.headers or "close" not in failed.headers["connection"]
            assert after.status_code == 200
            assert local_port(before) == local_port(failed) == local_port(after)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    logged = [line for line in out.splitlines() if request_id in line]
    assert logged, out
    assert "Traceback" in out.split(logged[0], 1)[1]
    assert "no such table: run_tags" in out


# --- a full database or disk ------------------------------------------------------------------


class PageLimit:
    """SQLite's ``max_page_count`` on every connection of an app's engine, as it is checked out:
    a database that cannot grow fails writes with SQLITE_FULL, as a full disk does."""

    def __init__(self, client: TestClient) -> None:
        self.pages: int | None = None
        engine = client.app.state.db.engine  # type: ignore[attr-defined]

        @event.listens_for(engine, "checkout")
        def _limit(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            # Below the database's size SQLite takes its size: no page may be added.
            dbapi_conn.execute(f"PRAGMA max_page_count = {self.pages or 4294967294}")


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'small.db'}"
    upgrade(url)
    with make_client(url) as client:
        yield client


def test_a_full_database_answers_507_and_readyz_says_so_until_there_is_room(
    sqlite_client: TestClient,
) -> None:
    client = sqlite_client
    limit = PageLimit(client)
    assert client.post("/api/v1/runs", json={"epochs": overfit_epochs()}).status_code == 201
    limit.pages = 1
    assert client.get("/readyz").status_code == 200  # nothing failed yet
    r = client.post("/api/v1/runs", json={"name": "big", "epochs": overfit_epochs(200)})
    assert r.status_code == 507, r.text
    assert "full" in r.json()["message"]
    assert r.json()["request_id"] == r.headers["x-request-id"]
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["storage"].startswith("full"), ready.json()
    assert "database or disk is full" in ready.json()["storage"]
    # Reads still work, and nothing of the refused run was stored.
    assert [run["name"] for run in client.get("/api/v1/runs").json()["items"]] == [""]
    limit.pages = None  # space freed
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["storage"] == "ok"
    assert client.post("/api/v1/runs", json={"epochs": overfit_epochs(200)}).status_code == 201


def test_a_successful_write_clears_the_full_mark(sqlite_client: TestClient) -> None:
    client = sqlite_client
    limit = PageLimit(client)
    client.get("/api/v1/runs")
    limit.pages = 1
    assert client.post("/api/v1/runs", json={"epochs": overfit_epochs(200)}).status_code == 507
    db = client.app.state.db  # type: ignore[attr-defined]
    assert db.write_failure is not None
    limit.pages = None
    assert client.post("/api/v1/runs", json={"epochs": overfit_epochs(200)}).status_code == 201
    assert db.write_failure is None


def test_readyz_probes_the_storage_after_a_failed_write(client: TestClient) -> None:
    """On either backend: with a write failure on record, /readyz looks for room (SQLite: pages
    and disk; PostgreSQL: a rolled-back write to a temporary table); finding it, it is ready."""
    db = client.app.state.db  # type: ignore[attr-defined]
    db.write_failure = WriteFailure(datetime.now(UTC), "database or disk is full")
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert db.write_failure is None


def test_postgresql_disk_full_maps_to_507() -> None:
    """PostgreSQL's disk_full (53100), as SQLAlchemy raises it; a connection that never reached
    the server is 503, and an ordinary error is left to the 500 handler."""
    full = OperationalError("INSERT ...", {}, psycopg.errors.DiskFull("could not extend file"))
    assert storage_error(full) == (507, storage_error(full)[1])  # type: ignore[index]
    refused = OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused"))
    assert storage_error(refused) == (503, "database unavailable: cannot connect to PostgreSQL")
    assert storage_error(RuntimeError("x")) is None
    sqlite_full = OperationalError(
        "INSERT", {}, sqlite3.OperationalError("database or disk is full")
    )
    assert storage_error(sqlite_full) is not None
    assert storage_error(sqlite_full)[0] == 507  # type: ignore[index]


# --- a database folder that is missing or read-only -----------------------------------------


@pytest.mark.parametrize("problem", ["missing", "not a folder"])
def test_a_server_whose_database_folder_is_unusable_starts_and_readyz_says_why(
    tmp_path: Path, problem: str
) -> None:
    if problem == "missing":
        folder = tmp_path / "nowhere"
        reason = f"folder {folder} does not exist"
    else:
        folder = tmp_path / "file"
        folder.write_text("")
        reason = f"{folder} is not a folder"
    app = create_app(Settings(database_url=f"sqlite:///{folder / 'advisor.db'}", worker="off"))
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"] == reason
        assert client.get("/healthz").status_code == 200
        r = client.post("/api/v1/runs", json={"epochs": overfit_epochs()})
        assert r.status_code == 503, r.text
        assert r.json()["message"].startswith("database unavailable")
        assert r.headers["retry-after"] == "5"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders regardless")
def test_a_read_only_database_folder_shows_on_readyz(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    url = f"sqlite:///{folder / 'advisor.db'}"
    upgrade(url)
    folder.chmod(0o555)
    try:
        with TestClient(create_app(Settings(database_url=url, worker="off"))) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["reason"] == f"folder {folder} is not writable"
            r = client.post("/api/v1/runs", json={"epochs": overfit_epochs()})
            assert r.status_code == 503, r.text
    finally:
        folder.chmod(0o755)
