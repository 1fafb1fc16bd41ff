"""Adaptive seeds and races end to end through the API, on SQLite and PostgreSQL, with real
trainings of a tiny recipe on the digits: how many seeds a check used and why it stopped, both
criteria, a race's shared baseline, its lanes trained at once by as many workers and its pruned
candidates (epochs counted), ranking and verdicts, cancellation mid-race, and a worker killed
mid-race whose trial another one takes over without training again what had finished."""

import signal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.advisor.verdicts import compare
from app.builder.recipe import Recipe
from app.db import Database
from app.models import RungVerdict, Trial, TrialStatus
from tests.conftest import make_client
from tests.worker.test_verification_api import RECIPE, report
from tests.worker.test_verification_api import wait as wait_briefly
from tests.worker.test_workers import claimed, trial_rows, wait_for, worker_process, workers

# Six epochs: the race's checkpoints fall at epochs 2 and 3; strong augmentation on so short a
# schedule trails clearly (deterministic on the CPU: the same seeds give the same curves).
SIX = {**RECIPE, "head": {"ps": 0.0, "lin_ftrs": [32]}, "epochs": 6}
RACE = ["augment", "mixup", "dropout_head"]


@pytest.fixture
def worker_client(db_url: str) -> Any:
    with make_client(db_url, worker="embedded", worker_poll_s=0.1, worker_lease_s=20) as c:
        yield c


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """The embedded worker trains in this process: one thread each for it and the server is
    faster on two loaded cores than two contending ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def wait(client: TestClient, job_id: int) -> dict[str, Any]:
    return wait_briefly(client, job_id, timeout=900)


def rows(url: str, model: Any, **where: Any) -> list[Any]:
    db = Database(url)
    with db.session() as session:
        query = select(model).filter_by(**where)
        found = list(session.scalars(query))
        session.expunge_all()
    db.dispose()
    return found


def verify(client: TestClient, run_id: int, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/api/v1/runs/{run_id}/verifications", json=body)
    assert r.status_code == 202, r.text
    queued: dict[str, Any] = r.json()
    return queued


def test_adaptive_seeds_stop_once_the_verdict_settles(
    worker_client: TestClient, db_url: str
) -> None:
    client = worker_client
    run = report(client, SIX)
    queued = verify(client, run["id"], {"rung": "augment", "max_seeds": 5})
    assert queued["protocol"] == {
        "min_seeds": 2, "max_seeds": 5, "criterion": "best", "smallest_effect": 0.01,
        "race": False,
    }  # fmt: skip
    job = wait(client, queued["id"])
    assert job["status"] == "succeeded", job
    result = job["result"]
    # Clearly worse on so short a schedule: settled before the maximum, on the best epoch.
    assert result["stopped"] == "settled" and job["verdict"] == "refuted"
    assert 2 <= result["seeds_used"] < 5
    assert result["trials_trained"] == result["trainings"] == 2 * result["seeds_used"]
    assert result["epochs_trained"] == 2 * result["seeds_used"] * 6
    assert job["progress"]["epochs_done"] == job["progress"]["epochs_total"]
    base = [s["best_metric"] for s in result["per_seed"] if s["role"] == "baseline"]
    cand = [s["best_metric"] for s in result["per_seed"] if s["role"] == "candidate"]
    again = compare(base, cand)
    assert again.verdict == result["verdict"]
    assert again.effect == pytest.approx(result["effect"])
    assert set(result["comparisons"]) == {"best", "final"}
    [recorded] = rows(db_url, RungVerdict, verification_id=job["id"])
    assert (recorded.rung, recorded.verdict, recorded.run_id) == ("augment", "refuted", run["id"])

    # The final epoch, with a fixed number of seeds: exactly that many pairs.
    fixed = verify(
        client,
        run["id"],
        {"rung": "dropout_head", "seeds": 2, "min_seeds": 2, "criterion": "final"},
    )
    job = wait(client, fixed["id"])
    result = job["result"]
    assert result["criterion"] == "final" and result["seeds_used"] == 2
    assert result["differences"] == result["comparisons"]["final"]["differences"]
    assert result["trials_reused"] == 2  # the baselines of seeds 0 and 1
    page = client.get(f"/verifications/{job['id']}")
    assert page.status_code == 200
    assert "final epoch (used)" in page.text and "2 seeds used" in page.text


def test_a_race_shares_one_baseline_and_stops_the_trailing_candidate(
    db_url: str, tmp_path: Path
) -> None:
    # A worker trains one trial at a time: a race saves epochs when its lanes train at once, so
    # as many workers as the race has trainings (two baselines, three rungs x two seeds).
    with make_client(db_url) as client, workers(db_url, [tmp_path / f"w{i}.log" for i in range(8)]):
        run = report(client, SIX)
        # At most two seeds, asked as a bound rather than a list: a race trains exactly those.
        queued = verify(client, run["id"], {"rungs": RACE, "max_seeds": 2})
        assert queued["rungs"] == RACE and queued["protocol"]["race"] is True
        job = wait(client, queued["id"])
        page = client.get(f"/verifications/{job['id']}").text
        assert job["status"] == "succeeded", job
        for r in job["result"]["child_runs"]:
            assert client.get(f"/api/v1/runs/{r}").status_code == 200
        applied = {
            child: client.get(f"/api/v1/runs/{child}").json()["applied_rung"]
            for child in job["result"]["child_runs"]
        }
    result = job["result"]
    assert result["seeds_used"] == 2
    assert result["stopped_reason"] == "a race trains every seed it is given (2)"
    race = result["race"]
    assert race["checkpoints"] == [2, 3]

    by_rung = {r["rung"]: r for r in result["rungs"]}
    pruned = [r for r in result["rungs"] if r.get("pruned_at")]
    assert [r["rung"] for r in pruned] == ["augment"]
    # A stopped candidate trained only to its checkpoint; survivors to the end; one baseline.
    for r in result["rungs"]:
        assert r["epochs_trained"] == 2 * (r.get("pruned_at") or 6)
    assert result["epochs_trained"] == 2 * 6 + sum(r["epochs_trained"] for r in result["rungs"])
    baseline = Recipe.model_validate({**SIX}).fingerprint()
    assert len(rows(db_url, Trial, recipe_fingerprint=baseline)) == 2
    assert len(rows(db_url, Trial, role="pruned")) == 2

    # Survivors ranked by their effect against the shared baseline, then the stopped ones.
    survivors = [r for r in result["rungs"] if not r.get("pruned_at")]
    assert [r["rank"] for r in result["rungs"]] == [1, 2, 3]
    assert survivors == sorted(survivors, key=lambda r: -r["effect"])
    assert result["rungs"][-1]["rung"] == "augment"
    assert by_rung["augment"]["verdict"] == "inconclusive" and by_rung["augment"]["effect"] is None
    assert race["winner"] == result["rungs"][0]["rung"]
    assert (job["verdict"], job["effect"]) == (result["rungs"][0]["verdict"], result["effect"])
    verdicts = {(v.rung, v.verdict) for v in rows(db_url, RungVerdict, verification_id=job["id"])}
    assert verdicts == {(r["rung"], r["verdict"]) for r in result["rungs"]}
    # Child runs for the survivors only, two seeds each.
    assert len(result["child_runs"]) == 4
    for r in survivors:
        for child in r["child_runs"]:
            assert applied[child] == r["rung"]

    assert "race of augment, mixup, dropout_head" in page
    assert "stopped at epoch 2" in page or "stopped at epoch 3" in page


def test_race_requests(client: TestClient) -> None:
    run = report(client, SIX)
    # The next three open rungs of the ladder that change the recipe (more data is not on disk).
    queued = verify(client, run["id"], {"race": 3})
    open_rungs = [
        s["rung"] for s in run["recommendation"]["ladder"]
        if s["status"] != "skipped" and s["rung"] != "more_data"
    ][:3]  # fmt: skip
    assert queued["rungs"] == open_rungs and queued["seeds"] == [0, 1, 2]
    for body, words in [
        ({"rung": "augment", "rungs": RACE}, "one of 'rung', 'rungs' or 'race'"),
        ({"rungs": ["augment", "augment"]}, "rungs must be distinct"),
        ({"rungs": ["augment"]}, "rungs"),
        ({"race": 1}, "race"),
        ({"min_seeds": 4, "max_seeds": 3}, "min_seeds"),
        ({"criterion": "median"}, "criterion"),
        ({"smallest_effect": -0.1}, "smallest_effect"),
    ]:
        r = client.post(f"/api/v1/runs/{run['id']}/verifications", json=body)
        assert r.status_code == 422, (body, r.text)
        assert words in r.json()["message"], (body, r.json())
    r = client.post(
        f"/api/v1/runs/{run['id']}/verifications", json={"rungs": ["more_data", "augment"]}
    )
    assert r.status_code == 409 and "cannot race" in r.json()["message"]


def test_seed_counts_are_honoured_or_refused(client: TestClient) -> None:
    """What is queued is what was asked: a race trains the seeds it is given, at most
    ``max_seeds`` and at least ``min_seeds`` of them; a single check draws from at most
    ``max_seeds``; counts that contradict each other are refused with the reason. Defaults give
    way to what was asked."""
    run = report(client, SIX)
    honoured: list[tuple[dict[str, Any], list[int], int, int]] = [
        ({"race": 3, "max_seeds": 2}, [0, 1], 2, 2),
        ({"rungs": RACE, "max_seeds": 1}, [0], 1, 1),
        ({"race": 2, "min_seeds": 4}, [0, 1, 2, 3], 4, 4),
        ({"race": 2}, [0, 1, 2], 3, 3),
        ({"rungs": RACE, "seeds": [5, 6, 7], "max_seeds": 2}, [5, 6], 2, 2),
        ({"rungs": RACE, "seeds": 4, "min_seeds": 4}, [0, 1, 2, 3], 4, 4),
        ({"rung": "augment", "max_seeds": 2}, [0, 1], 2, 2),
        ({"rung": "augment", "max_seeds": 1}, [0], 1, 1),
        ({"rung": "augment", "seeds": [5, 6, 7], "max_seeds": 2}, [5, 6], 2, 2),
        ({"rung": "augment", "seeds": 8, "min_seeds": 7}, list(range(8)), 7, 8),
        ({"rung": "augment", "seeds": 1}, [0], 1, 1),
        ({"rung": "augment"}, [0, 1, 2, 3, 4], 2, 5),
    ]
    for body, seeds, low, high in honoured:
        queued = verify(client, run["id"], body)
        protocol = queued["protocol"]
        got = (queued["seeds"], protocol["min_seeds"], protocol["max_seeds"])
        assert got == (seeds, low, high), body
    refused: list[tuple[dict[str, Any], str]] = [
        ({"race": 3, "seeds": 3, "max_seeds": 5},
         "max_seeds: 5 is more than the 3 seed(s) given in 'seeds'"),
        ({"rung": "augment", "seeds": [1, 2], "min_seeds": 3},
         "min_seeds: 3 is more than the 2 seed(s) given in 'seeds'"),
        ({"race": 3, "min_seeds": 3, "max_seeds": 2}, "min_seeds: 3 is more than max_seeds (2)"),
        ({"rung": "augment", "min_seeds": 6},
         "min_seeds: 6 is more than max_seeds (5, the default)"),
    ]  # fmt: skip
    for body, message in refused:
        r = client.post(f"/api/v1/runs/{run['id']}/verifications", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["message"] == message


def racing(trials: list[Trial]) -> bool:
    """A candidate is training (the baselines are queued first, so both have been taken)."""
    return any(t.status == TrialStatus.RUNNING and t.role == "candidate" for t in trials)


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_cancel_a_race_midway(worker_client: TestClient, db_url: str) -> None:
    client = worker_client
    run = report(client, {**SIX, "epochs": 12})
    queued = verify(client, run["id"], {"rungs": RACE, "seeds": 2})
    wait_for(lambda: racing(trial_rows(db_url, queued["id"])))
    assert client.post(f"/api/v1/verifications/{queued['id']}/cancel").status_code == 200
    job = wait(client, queued["id"])
    assert job["status"] == "cancelled" and job["result"] is None
    # The lane in training stops at its next heartbeat; nothing is left for a worker.
    wait_for(lambda: not racing(trial_rows(db_url, queued["id"])))
    left = {t.status for t in trial_rows(db_url, queued["id"])}
    assert left <= {TrialStatus.DONE, TrialStatus.CANCELLED}, left
    assert rows(db_url, RungVerdict) == []
    assert all(r["source"] != "verification" for r in client.get("/api/v1/runs").json()["items"])


# PostgreSQL, the scale-out database, where workers take over each other's trials.
@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_a_worker_killed_mid_race_loses_nothing_and_repeats_nothing_finished(
    db_url: str, tmp_path: Path
) -> None:
    with make_client(db_url) as client:
        run = report(client, {**SIX, "epochs": 8})
        queued = verify(client, run["id"], {"rungs": RACE, "seeds": 2})
        with worker_process(db_url, tmp_path / "a.log") as first:
            # Both baselines finished; a candidate is training.
            wait_for(lambda: racing(trial_rows(db_url, queued["id"])), timeout=300)
            first.send_signal(signal.SIGKILL)
            first.wait()
        before = trial_rows(db_url, queued["id"])
        finished = {t.id: t for t in before if t.status == TrialStatus.DONE}
        [killed] = [t for t in before if t.status == TrialStatus.RUNNING]
        assert len(finished) >= 2 and all(t.attempts == 1 for t in finished.values())
        with worker_process(db_url, tmp_path / "b.log"):
            job = wait(client, queued["id"])
        assert job["status"] == "succeeded", job
        result = job["result"]
        after = {t.id: t for t in trial_rows(db_url)}
        # What had finished is not trained again: the second worker never claimed it, and it
        # counts in the result as it was stored.
        assert not set(finished) & set(claimed(tmp_path / "b.log"))
        for trial_id, trial in finished.items():
            assert (after[trial_id].attempts, after[trial_id].worker) == (1, trial.worker)
            assert after[trial_id].curve == trial.curve
        baselines = [s for s in result["per_seed"] if s["role"] == "baseline"]
        assert {s["trial_id"] for s in baselines} <= set(finished)
        # The trial in training when its worker died was taken over, once.
        assert killed.id in claimed(tmp_path / "b.log")
        assert after[killed.id].attempts == 2 and after[killed.id].worker != killed.worker
        # Each trial stored once; each survivor's child runs once.
        trials = list(after.values())
        assert len({(t.recipe_fingerprint, t.seed) for t in trials}) == len(trials)
        survivors = [r for r in result["rungs"] if not r.get("pruned_at")]
        children = [r for r in client.get("/api/v1/runs").json()["items"]
                    if r["source"] == "verification"]  # fmt: skip
        assert len(children) == 2 * len(survivors) == len(result["child_runs"])
