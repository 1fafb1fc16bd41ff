"""Queue-to-start latency on PostgreSQL with an idle worker: LISTEN/NOTIFY against polling,
side by side on one fresh database. A probe worker (the real ``Worker.run`` loop and the database
source's wait, with ``run_once`` replaced by a claim that records the time and fails the trial
for good, which ends its verification and drops the rest of its trials) waits idle;
verifications are requested one at a time at random moments, and the time from the commit that
queued a verification's trials to the claim of its first trial is measured. Prints one JSON line
(milliseconds).

Usage: python -m benchmarks.queue_latency [--jobs 30] [--poll-s 1.0]
"""

import argparse
import json
import random
import threading
import time
import uuid
from statistics import median, quantiles

import psycopg

from app.db import Database
from app.migrate import upgrade
from app.schemas import RunCreate, VerificationCreate
from app.services.projects import Scope, ensure_project
from app.services.runs import create_run, get_run
from app.services.verifications import request
from app.worker.local import LocalSource
from app.worker.worker import Worker

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
RECIPE = {"arch": "simple_cnn_small", "epochs": 1, "data": {"kind": "digits", "image_size": 16}}


class Probe(Worker):
    """Claims as the worker does, records when (the first claim of each verification), and
    fails the trial instead of training it."""

    def __init__(self, db: Database, poll_s: float, listen: bool) -> None:
        source = LocalSource(db, lease_s=30, listen=listen)
        super().__init__(source, poll_s=poll_s, name=f"probe-{listen}")
        self.claimed: dict[int, float] = {}

    def run_once(self) -> bool:
        trial = self.source.claim(self.name, len(self.devices), self.poll_s)
        if trial is None:
            return False
        self.claimed.setdefault(trial.verification_id, time.perf_counter())
        self.source.fail(trial, self.name, "probe: not trained", final=True)
        return True


def measure(
    db: Database, run_id: int, scope: Scope, jobs: int, poll_s: float, listen: bool
) -> list[float]:
    probe = Probe(db, poll_s, listen)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    time.sleep(0.5)
    rng = random.Random(0)
    latencies = []
    for _ in range(jobs):
        time.sleep(rng.uniform(0.05, poll_s))  # the worker is idle, somewhere in its wait
        with db.session() as session:
            job_id = request(
                session, get_run(session, scope, run_id), VerificationCreate(rung="augment"), ()
            ).id
        queued = time.perf_counter()
        deadline = queued + 10 * poll_s + 5
        while job_id not in probe.claimed and time.perf_counter() < deadline:
            time.sleep(0.001)
        latencies.append(1000 * (probe.claimed[job_id] - queued))
    probe.stop.set()
    thread.join(timeout=10 * poll_s + 5)
    return latencies


def figures(latencies: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(median(latencies), 1),
        "p90_ms": round(quantiles(latencies, n=10)[-1], 1),
        "max_ms": round(max(latencies), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--poll-s", type=float, default=1.0)
    args = parser.parse_args()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        upgrade(url)
        db = Database(url)
        with db.session() as session:
            project = ensure_project(session, "default")
            body = RunCreate.model_validate({"recipe": RECIPE, "epochs": []})
            run_id = create_run(session, (project.id, project.name), body, max_epochs=100)["id"]
        scope = Scope(project.id, project.name, True)
        notify = measure(db, run_id, scope, args.jobs, args.poll_s, listen=True)
        poll = measure(db, run_id, scope, args.jobs, args.poll_s, listen=False)
        db.dispose()
        print(json.dumps({
            "jobs": args.jobs, "poll_s": args.poll_s,
            "notify": figures(notify), "polling": figures(poll),
            "median_ratio": round(median(notify) / median(poll), 4),
        }))  # fmt: skip
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
