"""What racing rungs saves: a 3-rung race against three separate verifications of the same rungs,
with the same seeds and epochs, side by side on fresh SQLite databases, each trained by the same
number of worker processes (``advisor worker``, one torch thread each).

A worker trains one trial at a time, and a race cuts a lane once every live lane has reached the
checkpoint: the lanes must train at once for a cut to save epochs, so the fleet has by default
one worker per training of the race (``seeds x (rungs + 1)``); ``--workers`` smaller shows what a
smaller fleet saves. Separate verifications are run with a fixed number of seeds
(``min_seeds = max_seeds``) so that both sides train the same seeds; the second and third reuse
the baselines the first trained, as the service does. Prints one JSON line: epochs and trainings
on each side, the ratios (against separate verifications with baselines reused, and against
2 x seeds trainings each, the cost without reuse), seconds, each side's winner and verdicts.

Usage: python -m benchmarks.race_cost [--epochs 12] [--seeds 3] [--rungs augment mixup dropout_head]
       [--workers N]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from app.db import Database
from app.migrate import upgrade
from app.models import JobStatus, Verification
from app.schemas import RunCreate, VerificationCreate
from app.services.projects import Scope, ensure_project
from app.services.runs import create_run, get_run
from app.services.verifications import request

# A small CNN on 16x16 digits, long enough for the remedies to separate.
RECIPE: dict[str, Any] = {
    "arch": "simple_cnn_small",
    "head": {"ps": 0.0, "lin_ftrs": [64]},
    "batch_size": 64,
    "lr": 3e-3,
    "data": {"kind": "digits", "image_size": 16},
}


def fresh(epochs: int) -> tuple[str, Database, Scope, int]:
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'race.db'}"
    upgrade(url)
    db = Database(url)
    recipe = {**RECIPE, "epochs": epochs}
    curve = [{"epoch": i, "train_loss": 1.0 / (i + 1), "valid_loss": 0.5} for i in range(5)]
    with db.session() as session:
        project = ensure_project(session, "default")
        body = RunCreate.model_validate({"recipe": recipe, "epochs": curve})
        run_id = create_run(session, (project.id, project.name), body, max_epochs=100)["id"]
    return url, db, Scope(project.id, project.name, True), run_id


@contextmanager
def fleet(url: str, workers: int) -> Iterator[None]:
    """``workers`` worker processes on ``url``, started and idle (torch loaded) on entry."""
    env = {**os.environ, "ADVISOR_DATABASE_URL": url, "ADVISOR_WORKER_THREADS": "1",
           "ADVISOR_WORKER_POLL_S": "0.1", "ADVISOR_WORKER_LEASE_S": "60",
           "ADVISOR_LOG_LEVEL": "info"}  # fmt: skip
    logs = [
        Path(url.removeprefix("sqlite:///")).with_name(f"worker{i}.log") for i in range(workers)
    ]
    with ExitStack() as stack:
        for log in logs:
            out = stack.enter_context(log.open("wb"))
            proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--devices", "cpu"],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
            stack.callback(proc.wait, 60)
            stack.callback(proc.terminate)
        while not all(" ready " in log.read_text() for log in logs):
            time.sleep(0.1)
        yield


def verify(db: Database, scope: Scope, run_id: int, body: VerificationCreate) -> dict[str, Any]:
    with db.session() as session:
        job_id = request(session, get_run(session, scope, run_id), body, ()).id
    while True:
        with db.session() as session:
            job = session.get(Verification, job_id)
            assert job is not None
            if job.status.finished:
                assert job.status == JobStatus.SUCCEEDED, job.error
                assert job.result is not None
                return job.result
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rungs", nargs="+", default=["augment", "mixup", "dropout_head"])
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    workers = args.workers or args.seeds * (len(args.rungs) + 1)

    url, db, scope, run_id = fresh(args.epochs)
    with fleet(url, workers):
        started = time.perf_counter()
        raced = verify(db, scope, run_id, VerificationCreate(rungs=args.rungs, seeds=args.seeds))
        race_s = time.perf_counter() - started

    url, db, scope, run_id = fresh(args.epochs)
    separate: dict[str, dict[str, Any]] = {}
    with fleet(url, workers):
        started = time.perf_counter()
        for rung in args.rungs:
            body = VerificationCreate(rung=rung, seeds=args.seeds, min_seeds=args.seeds)
            separate[rung] = verify(db, scope, run_id, body)
        separate_s = time.perf_counter() - started

    separate_epochs = sum(r["epochs_trained"] for r in separate.values())
    no_reuse_epochs = 2 * args.seeds * args.epochs * len(args.rungs)
    criterion = raced["criterion"]
    best_separate = max(separate, key=lambda r: separate[r]["effect"])
    print(
        json.dumps(
            {
                "rungs": args.rungs,
                "seeds": args.seeds,
                "epochs": args.epochs,
                "workers": workers,
                "criterion": criterion,
                "race": {
                    "epochs_trained": raced["epochs_trained"],
                    "trials_trained": raced["trials_trained"],
                    "seconds": round(race_s, 1),
                    "winner": raced["race"]["winner"],
                    "ranking": [
                        {k: r.get(k) for k in ("rung", "verdict", "effect", "pruned_at")}
                        for r in raced["rungs"]
                    ],
                },
                "separate": {
                    "epochs_trained": separate_epochs,
                    "trials_trained": sum(r["trials_trained"] for r in separate.values()),
                    "seconds": round(separate_s, 1),
                    "winner": best_separate,
                    "verdicts": {
                        rung: {"verdict": r["verdict"], "effect": r["effect"]}
                        for rung, r in separate.items()
                    },
                },
                "cost_ratio_vs_separate": round(raced["epochs_trained"] / separate_epochs, 3),
                "cost_ratio_vs_2x_seeds_each": round(raced["epochs_trained"] / no_reuse_epochs, 3),
                "time_ratio": round(race_s / separate_s, 3),
                "same_winner": raced["race"]["winner"] == best_separate,
            }
        )
    )


if __name__ == "__main__":
    main()
