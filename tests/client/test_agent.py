"""``overfit-advisor agent`` and ``trial()`` with real processes: the agent runs tiny plain-Python
scripts (no framework) that report with ``track()``. Against a stand-in worker API that serves
what a test needs (a hostile change, a stop, a lost lease) and records what the agent hands in,
and, once the service serves script trials, against ``advisor serve`` itself."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from overfit_advisor import Client, TrackedRun, track, trial
from overfit_advisor import trials as trials_module

from app.advisor.knobs import KNOBS
from app.schemas import TrialClaim
from tests.conftest import overfit_epochs
from tests.databases import fresh_database
from tests.worker.http_workers import (
    api,
    check_once,
    finished,
    logged_process,
    make_project,
    name_prefix,
    running,
    service,
    trials,
    wait_for,
)

AGENT = [sys.executable, "-m", "overfit_advisor", "agent"]
COMMAND = Path(sys.executable).parent / "overfit-advisor"

# --- scripts the agent runs ----------------------------------------------------------------

# Reports `EVALUATIONS` evaluations through track(), `PAUSE` seconds apart; what it was given
# goes to the file named by SEEN, for the test to read.
REPORTING = """
import json, os, sys, time
from overfit_advisor import track
seen = {"trial": os.environ.get("ADVISOR_TRIAL"), "argv": sys.argv[1:],
        "hashseed": os.environ.get("PYTHONHASHSEED"), "pid": os.getpid()}
with open(os.environ["SEEN"], "w") as out:
    json.dump(seen, out)
print("training starts", flush=True)
with track("tiny", metric="accuracy") as run:
    for epoch in range(int(os.environ.get("EVALUATIONS", "3"))):
        time.sleep(float(os.environ.get("PAUSE", "0")))
        run.log_epoch(epoch, 1.0 / (epoch + 1), 0.5 + 0.01 * epoch, accuracy=0.5 + 0.01 * epoch)
        print(f"epoch {epoch} done", flush=True)
"""

CRASHING = """
import sys
from overfit_advisor import track
with track("tiny", metric="accuracy") as run:
    run.log_epoch(0, 1.0, 0.9, accuracy=0.4)
    for i in range(60):
        print(f"line {i}", flush=True)
    print("about to fail", file=sys.stderr, flush=True)
    raise RuntimeError("CUDA out of memory (pretend)")
"""

SILENT = "print('trained, but reported nothing')\n"

# Reports one evaluation, then trains on and on, deaf to SIGTERM: only SIGKILL ends it.
STUBBORN = """
import os, signal, time
from overfit_advisor import track
signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
with track("tiny", metric="accuracy") as run:
    epoch = 0
    while True:
        run.log_epoch(epoch, 1.0, 0.9, accuracy=0.4)
        with open(os.environ["SEEN"], "w") as out:
            out.write(str(os.getpid()))
        epoch += 1
        time.sleep(0.2)
"""


def script(tmp_path: Path, source: str, name: str = "train.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def agent_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """The environment of an agent: no ADVISOR_* of this process, SEEN for the scripts."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    return {**base, "SEEN": str(tmp_path / "seen.json"), **env}


# --- a stand-in worker API -----------------------------------------------------------------


def claimed(**fields: Any) -> dict[str, Any]:
    """A script trial as the service hands it out."""
    return {"id": 7, "verification_id": 3, "role": "candidate", "rung": "dropout_head",
            "seed": 12345, "recipe": {}, "epochs": 3, "device": "auto", "gpus": 1,
            "attempt": 1, "lease_s": 3.0, "runner": "script", "settings": {"lr": 0.01},
            "change": {"head_dropout": 0.25}, "run_name": "tiny", "metric": "accuracy",
            **fields}  # fmt: skip


class FakeService:
    """Serves one trial to the first claim (204 after), answers heartbeats with ``beat`` (the
    number of beats so far → status and body) and records every request."""

    def __init__(self, trial: dict[str, Any], beat: Any = None) -> None:
        self.trial: dict[str, Any] | None = trial
        self.beat = beat or (lambda n: (200, {"stop": False}))
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((path, body))
            if path.endswith("/claim"):
                given, self.trial = self.trial, None
                if given is None:
                    time.sleep(min(body.get("wait_s", 0), 0.5))
                    return 204, None
                return 200, given
            if path.endswith("/heartbeat"):
                answer: tuple[int, Any] = self.beat(len(self.beats()))
                return answer
            return 204, None

    def beats(self) -> list[dict[str, Any]]:
        return [b for p, b in self.requests if p.endswith("/heartbeat")]

    def handed_in(self) -> list[tuple[str, dict[str, Any]]]:
        """The complete, fail and release requests, by their last path segment."""
        ends = ("complete", "fail", "release")
        return [(p.rsplit("/", 1)[1], b) for p, b in self.requests if p.endswith(ends)]


@contextmanager
def fake_service(fake: FakeService) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            status, answer = fake.handle(self.path, body)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def run_agent(
    url: str, tmp_path: Path, command: list[str], *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, "--url", url, "--once", "--grace", "1", *args, "--", *command],
        env=agent_env(tmp_path, **env), capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


# --- the agent on its own ------------------------------------------------------------------


def test_the_client_declares_the_knobs_the_service_knows() -> None:
    """The client may not import the server, so the knob names live in both: the same names,
    in the same order."""
    assert trials_module.KNOBS == KNOBS


@pytest.mark.parametrize("after", [[], ["--"]])
def test_the_agent_refuses_to_start_without_a_command(tmp_path: Path, after: list[str]) -> None:
    for launcher in (AGENT, [str(COMMAND), "agent"]):
        done = subprocess.run([*launcher, "--url", "http://127.0.0.1:9", *after],
                              env=agent_env(tmp_path), capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 2, done
        said = done.stderr.strip().splitlines()
        assert len(said) == 1 and "no command" in said[0] and "-- python train.py" in said[0], said


def test_a_hostile_change_reaches_the_script_as_data_and_never_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = {
        "note": "; rm -rf ~",
        "touch": f"$(touch {marker})",
        "ticks": f"`touch {marker}`",
        "quote": "'\"; touch " + str(marker) + " #",
    }
    fake = FakeService(claimed(change=hostile, settings={"lr": 0.01, **hostile}))
    with fake_service(fake) as url:
        done = run_agent(url, tmp_path, [sys.executable, str(script(tmp_path, REPORTING)),
                                         "--epochs", "3"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "a shell ran the service's data"
    seen = json.loads((tmp_path / "seen.json").read_text())
    given = json.loads(seen["trial"])
    assert given["change"] == hostile and given["settings"] == {"lr": 0.01, **hostile}
    assert {k: given[k] for k in ("verification_id", "trial_id", "role", "seed", "rung",
                                  "epochs", "run_name", "metric")} == {
        "verification_id": 3, "trial_id": 7, "role": "candidate", "seed": 12345,
        "rung": "dropout_head", "epochs": 3, "run_name": "tiny", "metric": "accuracy",
    }  # fmt: skip
    assert seen["argv"] == ["--epochs", "3"] and seen["hashseed"] == "12345"
    assert not Path(given["epochs_file"]).exists(), "the trial's scratch files are removed"
    # The script's output streams through; the agent's own lines go to stderr.
    assert "epoch 2 done" in done.stdout
    assert "trial 7" in done.stderr
    [(kind, body)] = fake.handed_in()
    assert kind == "complete", fake.requests
    assert [e["epoch"] for e in body["curve"]] == [0, 1, 2]
    assert body["curve"][2] == {"epoch": 2, "train_loss": 1 / 3, "valid_loss": 0.52,
                                "metrics": {"accuracy": 0.52}}  # fmt: skip
    assert body["device"] in ("cpu", "cuda") and body["n_train"] is None
    assert fake.requests[0][1]["runner"] == "script"


def test_a_crashing_script_fails_the_trial_with_its_last_lines(tmp_path: Path) -> None:
    fake = FakeService(claimed())
    with fake_service(fake) as url:
        done = run_agent(url, tmp_path, [sys.executable, str(script(tmp_path, CRASHING))])
    assert done.returncode == 0, done.stderr
    [(kind, body)] = fake.handed_in()
    assert kind == "fail" and body["final"] is False
    error = body["error"]
    assert error.startswith("exit status 1\n"), error
    assert "RuntimeError: CUDA out of memory (pretend)" in error and "about to fail" in error
    assert "line 59" in error and "line 10\n" not in error, "the last 40 lines, not all"
    assert len(error) <= 4000


def test_a_script_that_reports_nothing_fails_saying_how_to_report(tmp_path: Path) -> None:
    fake = FakeService(claimed())
    with fake_service(fake) as url:
        run_agent(url, tmp_path, [sys.executable, str(script(tmp_path, SILENT))])
    [(kind, body)] = fake.handed_in()
    assert kind == "fail"
    assert "reported no evaluations" in body["error"] and "track()" in body["error"]
    assert "trained, but reported nothing" in body["error"]


def test_a_stop_from_the_service_ends_even_a_deaf_script_and_hands_in_its_evaluations(
    tmp_path: Path,
) -> None:
    fake = FakeService(claimed(), beat=lambda n: (200, {"stop": n >= 2}))
    started = time.monotonic()
    with fake_service(fake) as url:
        done = run_agent(url, tmp_path, [sys.executable, str(script(tmp_path, STUBBORN))])
    assert time.monotonic() - started < 30
    assert "the service said stop" in done.stderr
    pid = int((tmp_path / "seen.json").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # SIGKILLed after the grace period (1 s)
    [(kind, body)] = fake.handed_in()
    assert kind == "complete" and len(body["curve"]) >= 2


def test_a_lost_lease_stops_the_script_and_hands_in_nothing(tmp_path: Path) -> None:
    lost = (409, {"message": "trial 7 is not leased to this worker"})
    fake = FakeService(claimed(), beat=lambda n: lost if n >= 1 else (200, {"stop": False}))
    with fake_service(fake) as url:
        done = run_agent(url, tmp_path, [sys.executable, str(script(tmp_path, STUBBORN))])
    assert "lease lost" in done.stderr
    assert fake.handed_in() == []


def test_an_evaluation_without_the_verifications_metric_fails_saying_which(
    tmp_path: Path,
) -> None:
    fake = FakeService(claimed(metric="f1"))
    with fake_service(fake) as url:
        run_agent(url, tmp_path, [sys.executable, str(script(tmp_path, REPORTING))])
    [(kind, body)] = fake.handed_in()
    assert kind == "fail" and "f1=..." in body["error"]


def test_an_interrupted_agent_stops_the_script_and_hands_the_trial_back(tmp_path: Path) -> None:
    fake = FakeService(claimed())
    with fake_service(fake) as url:
        agent = subprocess.Popen(
            [*AGENT, "--url", url, "--grace", "1", "--", sys.executable,
             str(script(tmp_path, STUBBORN))],
            env=agent_env(tmp_path), stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for("the script reporting", lambda: len(fake.beats()) >= 1, timeout=60)
        agent.send_signal(signal.SIGINT)
        _, said = agent.communicate(timeout=30)
    assert agent.returncode == 128 + signal.SIGINT, said
    assert [kind for kind, _ in fake.handed_in()] == ["release"]
    pid = int((tmp_path / "seen.json").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --- trial() and track() in the script -----------------------------------------------------


@pytest.fixture
def no_trainer() -> Iterator[None]:
    """trial() remembers the trainer for the process: the other tests report without it."""
    trials_module.forget_trainer()
    yield
    trials_module.forget_trainer()


def capture() -> tuple[Client, list[httpx.Request]]:
    """A client that answers nothing and records what would have been sent."""
    sent: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503, json={"message": "not here"})

    return Client("http://advisor.invalid", transport=httpx.MockTransport(refuse)), sent


def test_trial_without_an_agent_returns_the_defaults_and_reports_the_trainer(
    monkeypatch: pytest.MonkeyPatch, no_trainer: None
) -> None:
    monkeypatch.delenv("ADVISOR_TRIAL", raising=False)
    defaults = {"lr": np.float32(0.5), "arch": "resnet34", "epochs": 20, "head_dropout": 0.0,
                "augment": "basic", "layers": ["a", "b"], "path": Path("/data"),
                "none": None}  # fmt: skip
    state = random.getstate()
    got = trial(defaults, knobs=["head_dropout", "smaller_model"],
                models=["resnet50", "resnet34", "resnet18"])  # fmt: skip
    assert got == defaults and got is not defaults
    assert random.getstate() == state, "nothing seeded without an agent"
    client, sent = capture()
    run = TrackedRun("mine", client=client, retry_s=(60.0, 60.0), finish_timeout_s=0.0)
    run.log_epoch(0, 1.0, 0.9)
    body = json.loads(sent[0].content)
    assert body["trainer"] == {
        "settings": {"lr": 0.5, "arch": "resnet34", "epochs": 20, "head_dropout": 0.0,
                     "augment": "basic", "layers": ["a", "b"]},
        "knobs": ["head_dropout", "smaller_model"],
        "models": ["resnet50", "resnet34", "resnet18"],
    }  # fmt: skip


def test_trial_names_the_knobs_it_takes(no_trainer: None) -> None:
    with pytest.raises(ValueError, match=r"unknown knob 'dropout'.*head_dropout, body_dropout"):
        trial({"p": 0.1}, knobs=["dropout"])
    with pytest.raises(ValueError, match="models="):
        trial({"arch": "a"}, knobs=["smaller_model"])
    with pytest.raises(ValueError, match="'arch'"):
        trial({"arch": "c"}, knobs=["smaller_model"], models=["a", "b"])
    assert trials_module.trainer() is None


def under_agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **fields: Any) -> Path:
    epochs_file = tmp_path / "epochs.jsonl"
    given = {"verification_id": 3, "trial_id": 7, "role": "candidate", "seed": 42,
             "rung": "dropout_head", "change": {"head_dropout": 0.25},
             "settings": {"lr": 0.01, "head_dropout": 0.25}, "epochs": 5, "run_name": "tiny",
             "metric": "accuracy", "epochs_file": str(epochs_file), **fields}  # fmt: skip
    monkeypatch.setenv("ADVISOR_TRIAL", json.dumps(given))
    return epochs_file


def test_trial_under_an_agent_merges_the_settings_and_seeds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_trainer: None
) -> None:
    under_agent(monkeypatch, tmp_path)
    defaults = {"lr": 0.1, "head_dropout": 0.0, "batch_size": 32}

    def draws() -> tuple[dict[str, Any], list[float], list[float]]:
        settings = trial(defaults, knobs=["head_dropout"])
        return settings, [random.random() for _ in range(3)], list(np.random.rand(3))

    first, again = draws(), draws()
    assert first[0] == {"lr": 0.01, "head_dropout": 0.25, "batch_size": 32}
    assert first == again, "the same seed draws the same numbers"
    torch = sys.modules.get("torch")
    if torch is not None:
        trial(defaults)
        a = torch.rand(3)
        trial(defaults)
        assert torch.equal(a, torch.rand(3))
    assert trials_module.trainer() is None, "a trial declares no trainer"


def test_track_under_an_agent_writes_the_epochs_file_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    epochs_file = under_agent(monkeypatch, tmp_path)
    client, sent = capture()
    with track("tiny", metric="accuracy", client=client, stop_when_overfitting=True) as run:
        for e in overfit_epochs(4):
            assert run.log_epoch(e["epoch"], e["train_loss"], e["valid_loss"], accuracy=0.5) is None
            assert not run.should_stop
        run.log_epoch(4, float("nan"), 1.0, accuracy=0.5)  # not a number: not reported
    assert run.finish() is None and run.run is None
    assert sent == [], "nothing goes to the service under an agent"
    records = [json.loads(line) for line in epochs_file.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[1]["metrics"] == {"accuracy": 0.5}
    said = capsys.readouterr().err
    assert said.count("stop_when_overfitting is off") <= 1


# --- against the service -------------------------------------------------------------------

serves_scripts = pytest.mark.skipif(
    "runner" not in TrialClaim.model_fields, reason="the service does not serve script trials yet"
)


@pytest.fixture
def db_file_url(tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite database of the test's own (the agent's tests need no PostgreSQL: the
    worker API's tests cover both backends)."""
    with fresh_database("sqlite", tmp_path) as url:
        yield url


# Short leases, so that a killed agent's trial is taken over within seconds (and long enough
# that a busy machine does not lose a live agent's).
SHORT = {"ADVISOR_WORKER_LEASE_S": "3"}
FLEET = "fleet-secret-token"
REQUIRED = {"ADVISOR_AUTH": "required", "ADVISOR_WORKER_TOKEN": FLEET, **SHORT}
# What the script declared when it was run by hand; a hostile string among the settings.
SETTINGS = {"lr": 0.01, "head_dropout": 0.0, "epochs": 3, "note": "; rm -rf ~"}


def report_script_run(client: httpx.Client, settings: dict[str, Any] | None = None) -> int:
    """A run of a user's script that overfits, declaring the head_dropout knob."""
    epochs = overfit_epochs()
    for e in epochs:
        e["metrics"] = {"accuracy": 1.0 - e["valid_loss"]}
    body = {"name": "tiny", "metric": {"name": "accuracy"}, "epochs": epochs,
            "trainer": {"settings": settings or SETTINGS, "knobs": ["head_dropout"]}}  # fmt: skip
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def verify_head_dropout(client: httpx.Client, run_id: int) -> int:
    r = client.post(f"/api/v1/runs/{run_id}/verifications",
                    json={"rung": "dropout_head", "seeds": [0]})  # fmt: skip
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


@contextmanager
def agent(
    base: str, tmp_path: Path, source: str, name: str, *args: str, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``overfit-advisor agent`` running ``source``, its output in ``name``.log; killed after."""
    command = [sys.executable, str(script(tmp_path, source, f"{name}.py"))]
    with logged_process(
        [*AGENT, "--url", base, "--grace", "2", *args, "--", *command],
        agent_env(tmp_path, SEEN=str(tmp_path / f"{name}.json"), **env),
        tmp_path / f"{name}.log",
    ) as proc:
        yield proc


def job_trials(client: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/verifications/{job_id}/trials")
    assert r.status_code == 200, r.text
    listed: list[dict[str, Any]] = r.json()
    return listed


@serves_scripts
def test_an_agent_verifies_a_rung_on_its_own_script(db_file_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    settings = {**SETTINGS, "touch": f"$(touch {marker})"}
    with service(db_file_url, tmp_path, **SHORT) as svc:
        client = api(svc.base)
        run_id = report_script_run(client, settings)
        job_id = verify_head_dropout(client, run_id)
        with agent(svc.base, tmp_path, REPORTING, "a", "--max-trials", "2") as a:
            job = finished(client, job_id)
            assert a.wait(timeout=60) == 0, "--max-trials 2: two trials, then it exits"
        check_once(db_file_url, job, run_id)
        listed = job_trials(client, job_id)
    assert not marker.exists()
    seen = json.loads(json.loads((tmp_path / "a.json").read_text())["trial"])
    assert seen["change"] in ({}, {"head_dropout": 0.25})
    assert seen["settings"] == {**settings, **seen["change"]}, "the settings reach it intact"
    assert {t["role"] for t in listed} == {"baseline", "candidate"}
    assert all(t["status"] == "done" and len(t["curve"]) == 3 for t in listed), listed
    assert all((t["worker"] or "").endswith(":agent") for t in listed)


@serves_scripts
def test_an_agent_killed_mid_trial_loses_it_to_another_and_the_verification_ends_once(
    db_file_url: str, tmp_path: Path
) -> None:
    with service(db_file_url, tmp_path, **SHORT) as svc:
        client = api(svc.base)
        run_id = report_script_run(client)
        job_id = verify_head_dropout(client, run_id)
        with agent(svc.base, tmp_path, REPORTING, "doomed", PAUSE="2") as doomed:
            held = wait_for(
                "the doomed agent's trial has an evaluation",
                lambda: running(db_file_url, name_prefix(doomed)),
            )
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
        script_pid = json.loads((tmp_path / "doomed.json").read_text())["pid"]
        wait_for("its script died with it", lambda: not _alive(script_pid), timeout=10)
        with agent(svc.base, tmp_path, REPORTING, "heir") as heir:
            job = finished(client, job_id)
            assert heir.poll() is None, "the agent waits for more trials"
        check_once(db_file_url, job, run_id)
    rows = {t.id: t for t in trials(db_file_url)}
    taken_over = rows[held.id]
    assert taken_over.status == "done" and taken_over.attempts == 2, taken_over.attempts
    assert (taken_over.worker or "").startswith(name_prefix(heir))
    assert len(taken_over.curve) == 3


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@serves_scripts
def test_a_crashing_script_fails_its_verification_with_its_last_lines(
    db_file_url: str, tmp_path: Path
) -> None:
    with service(db_file_url, tmp_path, **SHORT) as svc:
        client = api(svc.base)
        job_id = verify_head_dropout(client, report_script_run(client))
        with agent(svc.base, tmp_path, CRASHING, "crash"):
            job = finished(client, job_id)
        listed = job_trials(client, job_id)
    assert job["status"] == "failed", job
    assert "CUDA out of memory (pretend)" in (job["error"] or ""), job["error"]
    failed = [t for t in listed if t["status"] == "failed"]
    assert failed, listed
    error = failed[0]["error"]
    assert error.startswith("exit status 1") and "line 59" in error and "about to fail" in error


@serves_scripts
def test_a_projects_agent_never_gets_another_projects_trials(
    db_file_url: str, tmp_path: Path
) -> None:
    _, a_token = make_project(db_file_url, "a")
    _, b_token = make_project(db_file_url, "b")
    with service(db_file_url, tmp_path, **REQUIRED) as svc:
        a, b = api(svc.base, a_token), api(svc.base, b_token)
        a_job = verify_head_dropout(a, report_script_run(a))
        b_job = verify_head_dropout(b, report_script_run(b))
        with (
            agent(svc.base, tmp_path, REPORTING, "a", "--token", a_token) as a_agent,
            agent(
                svc.base, tmp_path, REPORTING, "b", "--token", b_token, "--project", "b"
            ) as b_agent,
        ):
            finished(a, a_job)
            finished(b, b_job)
        a_trials, b_trials = job_trials(a, a_job), job_trials(b, b_job)
    assert all((t["worker"] or "").startswith(name_prefix(a_agent)) for t in a_trials), a_trials
    assert all((t["worker"] or "").startswith(name_prefix(b_agent)) for t in b_trials), b_trials
