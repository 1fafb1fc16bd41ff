"""Real processes on the worker API, on both backends: ``advisor serve`` with its embedded worker
off, and ``advisor worker --server URL`` processes that have no database at all (their database
URL goes nowhere). A verification trained end to end; who may take which trials; a claim that
long-polls; and the faults: a worker killed (SIGKILL) or stalled (SIGSTOP past its lease, then
SIGCONT) mid-trial, the service killed and started again while workers hold leases, a project's
token revoked mid-trial. Each verification still ends once: one result, one set of rung
verdicts, one child run per candidate training, and a worker that lost its lease stores nothing.
"""

import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

from tests.worker.http_workers import (
    FAST,
    SLOW,
    api,
    check_once,
    finished,
    http_worker,
    logged_at,
    make_project,
    name_prefix,
    ready,
    report,
    revoke,
    running,
    service,
    stored,
    trials,
    verify,
    wait_for,
)

# Short leases, so that a lost worker's trial is taken over within seconds (and long enough
# that a busy machine does not lose a live worker's).
SHORT = {"ADVISOR_WORKER_LEASE_S": "3"}
FLEET = "fleet-secret-token"


def test_an_http_worker_trains_a_verification_end_to_end(db_url: str, tmp_path: Path) -> None:
    with service(db_url, tmp_path) as svc, http_worker(svc.base, tmp_path / "w.log") as w:
        client = api(svc.base)
        run_id = report(client, FAST)
        job = finished(client, verify(client, run_id, seeds=2))
        assert w.poll() is None, "the worker keeps running"
    check_once(db_url, job, run_id)
    result = job["result"]
    assert len(result["per_seed"]) == 4 and result["trials_trained"] == 4
    assert job["progress"]["epochs_done"] == job["progress"]["epochs_total"] == 8
    rows = trials(db_url)
    assert len(rows) == 4 and all(t.status == "done" and t.attempts == 1 for t in rows)
    assert all((t.worker or "").startswith(name_prefix(w)) and t.device == "cpu" for t in rows)
    said = (tmp_path / "w.log").read_text()
    assert "Traceback" not in said and said.count(" claimed (") == 4, said[-3000:]


REQUIRED = {"ADVISOR_AUTH": "required", "ADVISOR_WORKER_TOKEN": FLEET, **SHORT}


def test_auth_decides_whose_trials_a_worker_takes(db_url: str, tmp_path: Path) -> None:
    _, a_token = make_project(db_url, "a")
    _, b_token = make_project(db_url, "b")
    with service(db_url, tmp_path, **REQUIRED) as svc:
        b = api(svc.base, b_token)
        run_id = report(b, FAST)
        job_id = verify(b, run_id)
        # At the HTTP level: no token, a wrong one, and A's token, which sees none of B's trials.
        for token in (None, "oa_not-a-token"):
            r = api(svc.base, token).post("/api/v1/trials/claim", json={"worker": "x"})
            assert r.status_code == 401 and "token" in r.json()["message"], r.text
        a = api(svc.base, a_token)
        started = time.monotonic()
        r = a.post("/api/v1/trials/claim", json={"worker": "a1", "wait_s": 0.5})
        assert r.status_code == 204 and time.monotonic() - started >= 0.45, r.text
        fleet = api(svc.base, FLEET)
        probe = fleet.post("/api/v1/trials/claim", json={"worker": "probe"}).json()
        assert probe["verification_id"] == job_id
        before = stored(db_url)
        whole = {"worker": "probe", "n_train": 10, "duration_s": 1.0, "device": "cpu",
                 "curve": [{"epoch": i, "train_loss": 1.0, "valid_loss": 1.0,
                            "metrics": {"accuracy": 0.5}} for i in range(2)]}  # fmt: skip
        for trial_id in (probe["id"], 424242):
            missing = f"trial {trial_id} not found"
            for path, body in [("heartbeat", {"worker": "probe"}), ("complete", whole),
                               ("fail", {"worker": "probe", "error": "x"}),
                               ("release", {"worker": "probe"})]:  # fmt: skip
                r = a.post(f"/api/v1/trials/{trial_id}/{path}", json=body)
                assert (r.status_code, r.json()) == (404, {"message": missing}), (path, r.text)
        assert stored(db_url) == before, "A's token changed nothing of B's"
        # B's own token may hold B's trials; the fleet's hands the probe's back untrained.
        beat = b.post(f"/api/v1/trials/{probe['id']}/heartbeat", json={"worker": "probe"})
        assert beat.status_code == 200, beat.text
        back = fleet.post(f"/api/v1/trials/{probe['id']}/release", json={"worker": "probe"})
        assert back.status_code == 204, back.text

        # Worker processes: one with no token, one with A's; neither takes B's trials.
        nobody, only_a = tmp_path / "nobody.log", tmp_path / "a.log"
        with http_worker(svc.base, nobody) as n, http_worker(svc.base, only_a, a_token) as wa:
            wait_for("both workers asked for trials", lambda: ready(nobody) and ready(only_a))
            wait_for("the tokenless worker was refused", lambda: "401" in nobody.read_text())
            time.sleep(1)
            assert all(t.status == "queued" and t.attempts == 0 for t in trials(db_url))
            # The fleet's worker trains B's verification while the others are refused or idle.
            with http_worker(svc.base, tmp_path / "fleet.log", FLEET):
                job = finished(b, job_id)
            assert n.poll() is None and wa.poll() is None, "refused workers keep running"
    check_once(db_url, job, run_id)
    assert " claimed (" not in nobody.read_text() + only_a.read_text()
    assert "401" not in only_a.read_text()


def test_a_revoked_token_is_refused_mid_trial_and_stores_nothing(
    db_url: str, tmp_path: Path
) -> None:
    a_id, a_token = make_project(db_url, "a")
    with service(db_url, tmp_path, **REQUIRED) as svc:
        run_id = report(api(svc.base, a_token), SLOW)
        job_id = verify(api(svc.base, a_token), run_id)
        log = tmp_path / "a.log"
        with http_worker(svc.base, log, a_token) as wa:
            prefix = name_prefix(wa)
            held = wait_for("A's worker trains A's trial", lambda: running(db_url, prefix))
            renewed = revoke(db_url, a_id)
            time.sleep(0.5)  # a request authorized before the revocation may still land
            frozen = stored(db_url)
            wait_for("its hand-in refused", lambda: f"trial {held.id} failed" in log.read_text())
            wait_for("and a claim", lambda: "could not take a trial" in log.read_text(), 30)
            assert stored(db_url) == frozen, "nothing the revoked worker sent is stored"
            assert wa.poll() is None, "the refused worker keeps running"
            assert "401 Unauthorized" in log.read_text()
            # The fleet's worker takes the trial over once its lease runs out.
            with http_worker(svc.base, tmp_path / "fleet.log", FLEET):
                job = finished(api(svc.base, renewed), job_id)
    check_once(db_url, job, run_id)
    takeover = next(t for t in trials(db_url) if t.id == held.id)
    assert takeover.attempts == 2 and not (takeover.worker or "").startswith(prefix)


def test_a_killed_worker_s_trial_is_taken_over(db_url: str, tmp_path: Path) -> None:
    with service(db_url, tmp_path, **SHORT) as svc:
        client = api(svc.base)
        run_id = report(client, SLOW)
        job_id = verify(client, run_id)
        with http_worker(svc.base, tmp_path / "a.log") as first:
            held = stop_mid_trial(db_url, first)
            first.send_signal(signal.SIGKILL)
            first.wait()
        with http_worker(svc.base, tmp_path / "b.log") as second:
            job = finished(client, job_id)
    check_once(db_url, job, run_id)
    again = next(t for t in trials(db_url) if t.id == held)
    assert again.attempts == 2 and (again.worker or "").startswith(name_prefix(second))


def test_a_stalled_worker_past_its_lease_stores_nothing(db_url: str, tmp_path: Path) -> None:
    with service(db_url, tmp_path, **SHORT) as svc:
        client = api(svc.base)
        run_id = report(client, SLOW)
        job_id = verify(client, run_id)
        stalled = tmp_path / "a.log"
        with http_worker(svc.base, stalled) as first:
            held = stop_mid_trial(db_url, first)
            with http_worker(svc.base, tmp_path / "b.log") as second:
                job = finished(client, job_id)
                after = stored(db_url)
                first.send_signal(signal.SIGCONT)
                wait_for(
                    "the stalled worker heard",
                    lambda: "the lease was lost" in stalled.read_text(),
                    30,
                )
                time.sleep(1)
                assert stored(db_url) == after, "nothing of the stalled worker is stored"
                assert first.poll() is None and second.poll() is None
    check_once(db_url, job, run_id)
    again = next(t for t in trials(db_url) if t.id == held)
    assert again.attempts == 2 and (again.worker or "").startswith(name_prefix(second))


def test_workers_ride_out_a_restart_of_the_service(db_url: str, tmp_path: Path) -> None:
    # Leases long enough to outlast the restart: the workers keep theirs.
    with service(db_url, tmp_path, ADVISOR_WORKER_LEASE_S="15") as svc:
        client = api(svc.base)
        run_id = report(client, SLOW)
        job_id = verify(client, run_id, seeds=2)
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        with http_worker(svc.base, logs[0]) as a, http_worker(svc.base, logs[1]) as b:
            held = wait_for("a trial under way", lambda: running(db_url, name_prefix(a))
                            or running(db_url, name_prefix(b)))  # fmt: skip
            svc.kill()
            time.sleep(1.5)
            svc.start()
            job = finished(client, job_id)
            assert a.poll() is None and b.poll() is None
    check_once(db_url, job, run_id)
    said = logs[0].read_text() + logs[1].read_text()
    assert "ConnectError" in said or "unreachable" in said, "the workers saw the service go"
    # The worker training through the restart kept its lease and handed its trial in.
    kept = next(t for t in trials(db_url) if t.id == held.id)
    assert (kept.status, kept.attempts, kept.worker) == ("done", 1, held.lease_owner)


def test_a_waiting_worker_starts_a_queued_trial_within_a_second(
    db_url: str, tmp_path: Path
) -> None:
    with service(db_url, tmp_path) as svc:
        client = api(svc.base)
        run_id = report(client, FAST)
        log = tmp_path / "w.log"
        with http_worker(svc.base, log):
            wait_for("the worker is waiting in /claim", lambda: ready(log))
            time.sleep(1)
            asked = datetime.now()
            job_id = verify(client, run_id)
            line = wait_for("a claim", lambda: claimed(log), 10)
            job = finished(client, job_id)
    latency = (logged_at(line) - asked).total_seconds()
    assert latency < 1.0, f"queued to claimed in {latency:.3f} s"
    check_once(db_url, job, run_id)


def claimed(log: Path) -> str | None:
    """The worker's first "claimed" line, if it wrote one."""
    return next((s for s in log.read_text().splitlines() if " claimed (" in s), None)


def stop_mid_trial(db_url: str, worker: subprocess.Popen[bytes]) -> int:
    """Freeze ``worker`` (SIGSTOP) while it holds a trial with an epoch reported; the trial's id.
    Frozen first and looked at after, so that it cannot finish the trial in between."""
    prefix = name_prefix(worker)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if running(db_url, prefix) is None:
            time.sleep(0.05)
            continue
        worker.send_signal(signal.SIGSTOP)
        time.sleep(0.3)  # a request it sent before may still land
        held = running(db_url, prefix)
        if held is not None:
            return held.id
        worker.send_signal(signal.SIGCONT)
    raise AssertionError("the worker was never caught mid-trial")
