"""The epochs a server process keeps between appends: only what committed, bounded in size."""

from datetime import UTC, datetime

from app.db import Database
from app.epochs_cache import EpochsCache
from app.schemas import EpochIn
from app.services.runs import append_epochs, run_to_append
from tests.conftest import overfit_epochs, service_run

CREATED = datetime(2026, 12, 6, tzinfo=UTC)


def test_an_append_leaves_its_epochs_only_when_it_commits(db_url: str) -> None:
    db = Database(db_url)
    scope, run_id = service_run(db, {"epochs": overfit_epochs(6)})
    more = [EpochIn(epoch=6, train_loss=0.1, valid_loss=1.0)]
    with db.sessionmaker() as session:
        append_epochs(session, run_to_append(session, scope, run_id), more, max_epochs=100)
        session.rollback()
    assert len(db.epochs) == 0, "a rolled-back append left epochs that were never stored"
    with db.sessionmaker() as session:
        written = append_epochs(
            session, run_to_append(session, scope, run_id), more, max_epochs=100
        )
        session.commit()
    with db.sessionmaker() as session:
        again = run_to_append(session, scope, run_id)
    assert again["epochs"] is written["epochs"], "the next append reads the committed copy"
    assert again["n_epochs"] == 7 and again["version"] == written["version"]
    db.dispose()


def test_the_cache_holds_at_most_its_evaluations_dropping_the_least_recent_run() -> None:
    cache = EpochsCache(max_evaluations=100)
    runs = {run_id: [{"epoch": i} for i in range(40)] for run_id in (1, 2, 3)}
    cache.put((1, 1, CREATED), runs[1])
    cache.put((2, 1, CREATED), runs[2])
    assert cache.get((1, 1, CREATED)) is runs[1]  # run 1 is now the most recent
    cache.put((3, 1, CREATED), runs[3])
    assert cache.get((2, 1, CREATED)) is None and cache.get((1, 1, CREATED)) is runs[1]
    assert cache.get((1, 2, CREATED)) is None, "another version of the row"
    cache.put((4, 1, CREATED), [{"epoch": i} for i in range(101)])
    assert cache.get((4, 1, CREATED)) is None and len(cache) == 2, "too long to hold"
