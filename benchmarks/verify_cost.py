"""Wall time of a 3-seed verification, cold and with the baseline already trained (reused).

Runs one worker in-process against a fresh SQLite database, trial after trial until the
verification ends: one reproducible run, a verification of one rung (baselines and candidates
trained), then of another rung (only the candidates trained). Prints one JSON line.

Usage: python -m benchmarks.verify_cost [--arch simple_cnn] [--epochs 4] [--seeds 3]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from app.builder.recipe import Recipe
from app.db import Database
from app.migrate import upgrade
from app.models import JobStatus, Verification
from app.schemas import RunCreate, VerificationCreate
from app.services.projects import Scope, ensure_project
from app.services.runs import create_run, get_run
from app.services.verifications import request
from app.worker.local import LocalSource
from app.worker.worker import Worker


def ended(db: Database, job_id: int) -> bool:
    with db.session() as session:
        job = session.get(Verification, job_id)
        return job is None or job.status.finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="simple_cnn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'verify.db'}"
    upgrade(url)
    db = Database(url)
    recipe = Recipe(
        arch=args.arch,
        epochs=args.epochs,
        head={"ps": 0.0},
        data={"kind": "digits", "image_size": 32},
    )
    epochs = [{"epoch": i, "train_loss": 1.0 / (i + 1), "valid_loss": 0.5} for i in range(5)]
    with db.session() as session:
        project = ensure_project(session, "default")
        body = RunCreate.model_validate({"recipe": recipe, "epochs": epochs})
        run_id = create_run(session, (project.id, project.name), body, max_epochs=100)["id"]
    worker = Worker(LocalSource(db, lease_s=60), devices=(args.device,), lease_s=60, poll_s=0.01)
    timings: dict[str, float] = {}
    trials: dict[str, int] = {}
    for label, rung in (("cold", "dropout_head"), ("baseline_reused", "augment")):
        with db.session() as session:
            run = get_run(session, Scope(project.id, project.name, True), run_id)
            job = request(session, run, VerificationCreate(rung=rung, seeds=args.seeds), ())
            job_id = job.id
        started = time.perf_counter()
        while not ended(db, job_id):
            worker.run_once()
        timings[label] = time.perf_counter() - started
        with db.session() as session:
            done = session.get(Verification, job_id)
            assert done is not None and done.status == JobStatus.SUCCEEDED, done and done.error
            assert done.result is not None
            trials[f"{label}_trained"] = done.result["trials_trained"]
            trials[f"{label}_reused"] = done.result["trials_reused"]
    worker.source.close()
    print(
        json.dumps(
            {
                "benchmark": "verify_cost",
                "arch": args.arch,
                "data": "digits 32px",
                "epochs": args.epochs,
                "seeds": args.seeds,
                "device": args.device,
                "seconds_cold": round(timings["cold"], 1),
                "seconds_baseline_reused": round(timings["baseline_reused"], 1),
                "ratio": round(timings["baseline_reused"] / timings["cold"], 3),
                "trials": trials,
            }
        )
    )


if __name__ == "__main__":
    main()
