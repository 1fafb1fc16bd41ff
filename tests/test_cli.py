"""The `advisor` command as a user runs it: migrate, create a project, serve (with concurrency)."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_client, overfit_epochs
from tests.servers import served as serve

ADVISOR = [sys.executable, "-m", "app.cli"]


def cli(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADVISOR_DATABASE_URL": db}
    return subprocess.run(
        [*ADVISOR, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_migrate_and_project_create(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert cli(db, "migrate").returncode == 0
    created = cli(db, "project", "create", "vision")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("oa_")
    again = cli(db, "project", "create", "vision")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    with make_client(db, auth="required") as client:
        r = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """`advisor serve` on a fresh SQLite file with two worker processes, as deployed."""
    with serve(tmp_path / "served.db", "--workers", "2") as url:
        yield url


def test_serve_migrates_and_takes_concurrent_reports(served: str) -> None:
    """Concurrent writers across threads and processes all land: none lost, none refused."""

    def report(i: int) -> int:
        with httpx.Client(base_url=served, timeout=30) as c:
            r = c.post("/api/v1/runs", json={"name": f"c{i}", "epochs": overfit_epochs()})
            assert r.status_code == 201, r.text
            run_id = int(r.json()["id"])
            r = c.post(
                f"/api/v1/runs/{run_id}/epochs",
                json={"epochs": [{"epoch": 20, "train_loss": 0.01, "valid_loss": 1.5}]},
            )
            assert r.status_code == 200, r.text
            return run_id

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(report, range(64)))
    assert len(set(ids)) == 64
    listed = httpx.get(f"{served}/api/v1/runs", params={"limit": 500}).json()["items"]
    assert sorted(r["id"] for r in listed) == sorted(ids)
    assert {r["n_epochs"] for r in listed} == {21}


def test_train_a_recipe_and_report_it(served: str, tmp_path: Path) -> None:
    recipe = tmp_path / "digits.json"
    recipe.write_text(json.dumps({"arch": "simple_cnn_small", "epochs": 2, "batch_size": 64,
                                  "data": {"kind": "digits", "image_size": 16}}))  # fmt: skip
    env = {**os.environ, "ADVISOR_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}"}
    command = [*ADVISOR, "train", str(recipe), "--server", served, "--name", "cli-run"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert "next:" in out.stdout
    runs = httpx.get(f"{served}/api/v1/runs", params={"name": "cli-run"}).json()["items"]
    assert len(runs) == 1
    run = httpx.get(f"{served}/api/v1/runs/{runs[0]['id']}").json()
    assert run["n_epochs"] == 2
    assert run["recipe"]["arch"] == "simple_cnn_small"
    assert f"run {run['id']}: {run['verdict']}" in out.stdout
    # Progress as it trains: a line per epoch with the live loss and metric.
    for e in run["epochs"]:
        line = f"epoch {e['epoch'] + 1}/2 train_loss {e['train_loss']:.4f}"
        assert line in out.stdout and f"accuracy {e['metrics']['accuracy']:.4f}" in out.stdout


def test_reassess_brings_stored_diagnoses_up_to_date(db_url: str) -> None:
    """Runs diagnosed by an older detector (simulated by rewriting their stored verdict) get the
    current diagnosis and recommendation; unchanged runs are counted, not reported as moved."""
    from sqlalchemy import create_engine, text

    with make_client(db_url) as client:
        stale = client.post("/api/v1/runs", json={"epochs": overfit_epochs()}).json()
        fresh = client.post("/api/v1/runs", json={"epochs": overfit_epochs()}).json()
    old = {"verdict": "healthy", "best_epoch": 6, "summary": "old", "evidence": {}}
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE runs SET verdict = 'healthy', rung = NULL, diagnosis = :d WHERE id = :i"),
            {"d": json.dumps(old), "i": stale["id"]},
        )
    engine.dispose()
    done = cli(db_url, "reassess", "--batch", "1")
    assert done.returncode == 0, done.stderr
    assert "2 runs reassessed; 1 verdicts changed" in done.stdout
    assert "healthy -> overfitting: 1" in done.stdout
    with make_client(db_url) as client:
        now = client.get(f"/api/v1/runs/{stale['id']}").json()
        untouched = client.get(f"/api/v1/runs/{fresh['id']}").json()
    assert now["verdict"] == "overfitting" and now["rung"] == fresh["rung"]
    assert now["diagnosis"] == fresh["diagnosis"]
    assert untouched["diagnosis"] == fresh["diagnosis"]


def test_serve_starts_on_a_missing_database_folder_and_readyz_says_why(tmp_path: Path) -> None:
    """The migration fails (it cannot create the file); the server starts anyway and says why."""
    import time

    from tests.servers import free_port

    folder = tmp_path / "nowhere"
    port = free_port()
    env = {**os.environ, "ADVISOR_DATABASE_URL": f"sqlite:///{folder / 'advisor.db'}",
           "ADVISOR_WORKER": "off"}  # fmt: skip
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline, ready = time.monotonic() + 60, None
        while ready is None and time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None, "the server did not start"
        assert ready.status_code == 503
        assert ready.json()["reason"] == f"folder {folder} does not exist"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "could not migrate" in out
