"""A real full disk under PostgreSQL: the database lives in a tablespace on a small tmpfs, writes
fill it, the API answers 507 and stores nothing, /readyz says why; once the disk grows, /readyz
is ready and writes succeed again.

Needs root (to mount the tmpfs) and the PostgreSQL server on this machine (the tablespace is a
folder of its filesystem); without them the test is skipped, saying so.
"""

import os
import random
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.migrate import upgrade
from tests.conftest import make_client
from tests.databases import PG_ADMIN, postgres_unreachable


def _mount(folder: Path, size: str, *options: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([*options, f"size={size}"]), "tmpfs", str(folder)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def small_disk() -> Iterator[Path]:
    reason = postgres_unreachable()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip(
            "NOT ROOT: cannot mount a small disk; the PostgreSQL full-disk test did NOT run"
        )
    folder = Path(tempfile.mkdtemp(prefix="advisor-pg-disk-"))
    try:
        _mount(folder, "8M", "mode=0700")
    except (OSError, subprocess.CalledProcessError) as exc:
        folder.rmdir()
        pytest.skip(f"CANNOT MOUNT a tmpfs ({exc}): the PostgreSQL full-disk test did NOT run")
    try:
        subprocess.run(["chown", "postgres:postgres", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


@pytest.fixture
def pg_on_small_disk(small_disk: Path) -> Iterator[str]:
    name = f"advisor_full_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE TABLESPACE {name} LOCATION '{small_disk}'")
        conn.execute(f'CREATE DATABASE "{name}" TABLESPACE {name}')
    url = PG_ADMIN.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP TABLESPACE IF EXISTS {name}")


def noisy_epochs(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Epochs that do not compress, so each run takes its size on the disk."""
    return [
        {"epoch": i, "train_loss": rng.random(), "valid_loss": rng.random() + 0.5,
         "metrics": {"accuracy": rng.random()}}
        for i in range(n)
    ]  # fmt: skip


def fill(client: TestClient, rng: random.Random) -> tuple[int, dict[str, Any]]:
    """Report big runs until one is refused: how many were stored, and the refusal."""
    for stored in range(200):
        r = client.post("/api/v1/runs", json={"name": f"run {stored}",
                                              "epochs": noisy_epochs(rng, 3000)})  # fmt: skip
        if r.status_code != 201:
            assert r.status_code == 507, r.text
            return stored, r.json()
    pytest.fail("200 big runs fitted on an 8 MB disk")


def test_a_full_postgresql_disk_answers_507_and_readyz_says_so_until_it_grows(
    pg_on_small_disk: str, small_disk: Path
) -> None:
    rng = random.Random(0)
    with make_client(pg_on_small_disk) as client:
        stored, refusal = fill(client, rng)
        assert stored > 0
        assert "full" in refusal["message"] and refusal["request_id"]
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["storage"].startswith("full"), ready.json()
        assert "No space left on device" in ready.json()["storage"]
        # Reads work, and the refused run was not stored, not even in part.
        page = client.get("/api/v1/runs", params={"limit": 200}).json()["items"]
        assert len(page) == stored
        assert f"run {stored}" not in {run["name"] for run in page}
        _mount(small_disk, "64M", "remount")
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["storage"] == "ok"
        r = client.post("/api/v1/runs", json={"name": "after", "epochs": noisy_epochs(rng, 100)})
        assert r.status_code == 201, r.text
