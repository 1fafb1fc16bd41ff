"""What racing rungs saves: a 3-rung race against three separate verifications of the same rungs,
with the same seeds and epochs, side by side on fresh SQLite databases, the worker in-process.

Separate verifications are run with a fixed number of seeds (``min_seeds = max_seeds``) so that
both sides train the same seeds; the second and third reuse the baselines the first trained, as
the service does. Prints one JSON line: epochs and trainings on each side, the ratios (against
separate verifications with baselines reused, and against 2 x seeds trainings each, the cost
without reuse), seconds, each side's winner and verdicts.

Usage: python -m benchmarks.race_cost [--epochs 12] [--seeds 3] [--rungs augment mixup dropout_head]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from app.db import Database
from app.migrate import upgrade
from app.models import JobStatus, Verification
from app.schemas import RunCreate, VerificationCreate
from app.services.projects import Scope, ensure_project
from app.services.runs import create_run, get_run
from app.services.verifications import request
from app.worker.worker import Worker

# A small CNN on 16x16 digits, long enough for the remedies to separate.
RECIPE: dict[str, Any] = {
    "arch": "simple_cnn_small",
    "head": {"ps": 0.0, "lin_ftrs": [64]},
    "batch_size": 64,
    "lr": 3e-3,
    "data": {"kind": "digits", "image_size": 16},
}


def fresh(epochs: int) -> tuple[Database, Scope, int]:
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'race.db'}"
    upgrade(url)
    db = Database(url)
    recipe = {**RECIPE, "epochs": epochs}
    curve = [{"epoch": i, "train_loss": 1.0 / (i + 1), "valid_loss": 0.5} for i in range(5)]
    with db.session() as session:
        project = ensure_project(session, "default")
        body = RunCreate.model_validate({"recipe": recipe, "epochs": curve})
        run_id = create_run(session, (project.id, project.name), body, max_epochs=100)["id"]
    return db, Scope(project.id, project.name, True), run_id


def verify(db: Database, scope: Scope, run_id: int, body: VerificationCreate) -> dict[str, Any]:
    with db.session() as session:
        job_id = request(session, get_run(session, scope, run_id), body, ()).id
    assert Worker(db, devices=("cpu",)).run_once()
    with db.session() as session:
        job = session.get(Verification, job_id)
        assert job is not None and job.status == JobStatus.SUCCEEDED, job and job.error
        assert job.result is not None
        return job.result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rungs", nargs="+", default=["augment", "mixup", "dropout_head"])
    args = parser.parse_args()
    torch.set_num_threads(2)

    db, scope, run_id = fresh(args.epochs)
    started = time.perf_counter()
    raced = verify(db, scope, run_id, VerificationCreate(rungs=args.rungs, seeds=args.seeds))
    race_s = time.perf_counter() - started

    db, scope, run_id = fresh(args.epochs)
    separate: dict[str, dict[str, Any]] = {}
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
