"""Two verifications of one run share its baseline trial (same recipe fingerprint and seed): the
one that waits on the other's training still ends, whichever trials are handed in first."""

from typing import Any

from app.db import Database
from app.models import JobStatus, Trial, Verification
from app.schemas import VerificationCreate
from app.services import trials
from app.services.runs import get_run
from app.services.verifications import request
from tests.conftest import service_run

RECIPE = {
    "arch": "simple_cnn_small",
    "head": {"ps": 0.0, "lin_ftrs": [32]},
    "epochs": 2,
    "data": {"kind": "digits", "image_size": 16},
}


def curve(accuracy: float) -> list[dict[str, Any]]:
    return [
        {
            "epoch": i,
            "train_loss": 1.0,
            "valid_loss": 1.0,
            "metrics": {"accuracy": accuracy + i / 10},
        }
        for i in range(2)
    ]


def test_a_verification_waiting_on_a_shared_trial_ends(db_url: str) -> None:
    db = Database(db_url)
    scope, run_id = service_run(db, {"recipe": RECIPE, "epochs": []})
    asked = []
    for rung in ("augment", "dropout_head"):
        with db.session() as session:
            run = get_run(session, scope, run_id)
            asked.append(request(session, run, VerificationCreate(rung=rung, seeds=[0]), ()).id)
    first, second = asked
    with db.session() as session:
        owners = {(t.role, t.verification_id) for t in session.query(Trial)}
    assert owners == {("baseline", first), ("candidate", first), ("candidate", second)}
    claimed = []
    with db.session() as session:
        while (found := trials.claim(session, "w", devices=1, lease_s=60)) is not None:
            claimed.append(found)
    # The second verification's own candidate comes in first: then nothing of its own is left
    # to advance it when the shared baseline, the first's, is handed in.
    for found in sorted(claimed, key=lambda c: (c.verification_id != second, c.id)):
        with db.session() as session:
            trials.complete(session, found.id, "w", curve=curve(0.5), n_train=100,
                            n_classes=10, duration_s=1.0, device="cpu")  # fmt: skip
    with db.session() as session:
        waiting = session.get(Verification, second)
        assert waiting is not None and waiting.status == JobStatus.RUNNING
        trials.advance_stalled(session)  # what every worker's claim does first
    with db.session() as session:
        done = {v.id: v.status for v in session.query(Verification)}
    assert done == {first: JobStatus.SUCCEEDED, second: JobStatus.SUCCEEDED}
    db.dispose()
