"""``track`` in a hand-written loop against a real server process that comes and goes: the loop
never sees an exception, every epoch arrives once, the diagnosis is printed at the end; the
stop rule, the lines the client prints and the records it sends."""

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from overfit_advisor import Client, Run, Snapshots, TrackedRun, track
from overfit_advisor.calls import epoch_record
from overfit_advisor.stopping import LiveStop

from tests.client.conftest import FAST_RETRY
from tests.conftest import UDACITY_MNIST, overfit_epochs
from tests.servers import free_port, served


def log(run: TrackedRun, epochs: list[dict[str, Any]]) -> None:
    for e in epochs:
        run.log_epoch(e["epoch"], e["train_loss"], e["valid_loss"])


def test_a_hand_written_loop_reports_every_epoch(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    epochs = overfit_epochs()
    with track("loop", url=server, params={"lr": 0.01}, **FAST_RETRY) as run:
        log(run, epochs)
        assert run.diagnosis is not None and run.diagnosis.verdict == "overfitting"
        # Each append answered its last evaluation only; the client holds the run whole.
        assert run.run is not None and len(run.run.raw["epochs"]) == 1
        assert [e["epoch"] for e in run.run.epochs] == [e["epoch"] for e in epochs]
    assert run.run is not None
    stored = Client(server).run(run.run.id)
    assert [e["epoch"] for e in stored.epochs] == [e["epoch"] for e in epochs]
    assert run.run.raw["epochs"] == stored.raw["epochs"], "finished: answered whole"
    said = capsys.readouterr().err
    assert "overfitting" in said and f"{server}/runs/{run.run.id}" in said
    assert "next: more_data" in said


def test_stop_when_overfitting_says_where_to_stop(server: str) -> None:
    epochs = overfit_epochs(30)
    trained = []
    with track("early-stop", url=server, stop_when_overfitting=True, **FAST_RETRY) as run:
        weights = {"epoch": -1}  # stands in for a model's weights: which epoch they are from
        kept = Snapshots(run, lambda: dict(weights))
        for e in epochs:
            trained.append(e["epoch"])
            weights["epoch"] = e["epoch"]
            run.log_epoch(e["epoch"], e["train_loss"], e["valid_loss"])
            kept.after_epoch(e["epoch"])
            if run.should_stop:
                break
    assert len(trained) < len(epochs), "training stopped before its last epoch"
    assert run.stop_epoch == 6  # the valid loss's minimum in overfit_epochs
    assert kept.of_stop_epoch() == {"epoch": 6}
    assert len(kept.copies) <= 2, "one copy per signal at most"


def test_a_service_that_comes_and_goes_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, db = free_port(), tmp_path / "flaky.db"
    url = f"http://127.0.0.1:{port}"
    epochs = overfit_epochs(20)
    with track("flaky", url=url, **FAST_RETRY) as run:
        log(run, epochs[:5])  # nobody listening yet
        assert run.run is None and len(run.pending) == 5
        with served(db, port=port):
            log(run, epochs[5:10])
            assert run.run is not None and not run.pending
        log(run, epochs[10:15])  # gone again
        assert len(run.pending) == 5
        with served(db, port=port):
            log(run, epochs[15:])
    said = capsys.readouterr().err
    assert said.count("service unreachable") == 2 and "reporting resumed" in said
    with served(db, port=port):
        page = httpx.get(f"{url}/api/v1/runs", params={"name": "flaky"}).json()
        assert len(page["items"]) == 1, "one run, created once"
        stored = httpx.get(f"{url}/api/v1/runs/{page['items'][0]['id']}").json()
    assert [e["epoch"] for e in stored["epochs"]] == list(range(20))


def test_a_refusal_is_said_once_and_training_goes_on(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with track("bad", url=server, metric={"name": "score"}, **FAST_RETRY) as run:
        log(run, overfit_epochs(8))  # 'score' has no known direction: refused
    said = capsys.readouterr().err
    assert said.count("refused the report") == 1 and "score" in said
    assert run.run is None


class LosesAnswers(httpx.HTTPTransport):
    """Delivers each request, but loses the answer to the first POST of each path: the service
    stored it, the client never heard."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path not in self.lost:
            self.lost.append(request.url.path)
            response.close()
            raise httpx.ReadError("connection reset after the request was sent")
        return response


def test_answers_lost_after_the_service_stored_them_send_nothing_twice(server: str) -> None:
    transport = LosesAnswers()
    client = Client(server, transport=transport)
    epochs = overfit_epochs(12)
    with track("lost-answers", client=client, **FAST_RETRY) as run:
        log(run, epochs)
    assert len(transport.lost) == 3, "the creation, an append and the finish lost their answer"
    assert run.run is not None and run.run.verdict == "overfitting", "the finish was retried"
    page = httpx.get(f"{server}/api/v1/runs", params={"name": "lost-answers"}).json()
    assert len(page["items"]) == 1, "the retried creation did not make a second run"
    stored = httpx.get(f"{server}/api/v1/runs/{page['items'][0]['id']}").json()
    assert [e["epoch"] for e in stored["epochs"]] == list(range(12))


def test_an_epoch_that_blew_up_to_nan_is_left_out_not_the_run(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    epochs = overfit_epochs(8)
    with track("nan", url=server, **FAST_RETRY) as run:
        log(run, epochs[:6])
        run.log_epoch(6, float("nan"), 1.0)
        log(run, epochs[7:])
    assert run.run is not None
    stored = Client(server).run(run.run.id)
    assert [e["epoch"] for e in stored.epochs] == [0, 1, 2, 3, 4, 5, 7]
    assert "epoch 6 has a value that is not a finite number" in capsys.readouterr().err


def test_evaluations_by_steps_carry_their_step_learning_rate_and_fractional_epoch(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``log_epoch`` takes a fractional epoch, ``step=`` and ``lr=`` beside the metrics; they
    are stored as given (a numpy integer epoch as an integer), a learning rate at zero is left
    out, and the lines name the evaluations by their steps."""
    evaluations = [
        {**e, "epoch": 0.4 * (i + 1), "step": 40 * (i + 1), "lr": 1e-3 * 0.9**i}
        for i, e in enumerate(overfit_epochs())
    ]
    # An accuracy that moves a little (one that never moves is a model answering one class,
    # which is never stopped).
    accuracy = [0.5 + 0.01 * (i % 2) for i in range(len(evaluations))]
    with track("by-steps", url=server, stop_when_overfitting=True, **FAST_RETRY) as run:
        for e, acc in zip(evaluations, accuracy, strict=True):
            run.log_epoch(
                e["epoch"], e["train_loss"], e["valid_loss"], step=e["step"], lr=e["lr"],
                accuracy=acc,
            )  # fmt: skip
            if run.should_stop:
                break
    assert run.run is not None and run.stop_epoch is not None
    stored = Client(server).run(run.run.id).epochs
    sent = evaluations[: len(stored)]
    assert [(e["epoch"], e["step"], e["lr"]) for e in stored] == [
        (e["epoch"], e["step"], e["lr"]) for e in sent
    ]
    assert [e["metrics"] for e in stored] == [{"accuracy": a} for a in accuracy[: len(stored)]]
    stop_step = {e["epoch"]: e["step"] for e in stored}[run.stop_epoch]
    assert f"keep the weights of step {stop_step} " in capsys.readouterr().err
    with track("numpy-epochs", url=server, **FAST_RETRY) as run:
        run.log_epoch(np.int64(0), 1.0, 1.0, lr=0.0)
    assert run.run is not None
    [first] = Client(server).run(run.run.id).epochs
    assert type(first["epoch"]) is int and first.get("lr") is None


def test_while_the_service_is_away_the_answer_and_the_lines_say_the_verdict_is_stale(
    tmp_path: Path,
) -> None:
    """The service answers six epochs, then goes: each later ``log_epoch`` answers the last
    diagnosis marked stale, and the lines printed at the end say which evaluations it lacks."""
    port, db = free_port(), tmp_path / "stale.db"
    url, said = f"http://127.0.0.1:{port}", list[str]()
    epochs = overfit_epochs(9)
    run = TrackedRun("stale", url=url, retry_s=(0.05, 0.2), finish_timeout_s=0.3, say=said.append)
    with served(db, port=port):
        log(run, epochs[:6])
        fresh = run.log_epoch(6, epochs[6]["train_loss"], epochs[6]["valid_loss"])
    assert fresh is not None and not fresh.stale
    later = run.log_epoch(7, epochs[7]["train_loss"], epochs[7]["valid_loss"])
    assert later is not None and later.stale and later.verdict == fresh.verdict
    run.finish()
    assert said[-2] == "1 epoch could not be reported (service unreachable)"
    assert said[-1].startswith(fresh.verdict) and said[-1].endswith(
        "[stale: not yet diagnosed: epoch 7]"
    )


def test_putting_weights_back_says_what_the_epoch_scored_beside_the_best(server: str) -> None:
    """The line a callback prints when it puts weights back: the epoch, its value of the
    criterion, and the best value seen and where (or that it is the best)."""
    accuracy = [0.5, 0.6, 0.7, 0.8, 0.853, 0.84, 0.851, 0.82, 0.8, 0.79]
    said: list[str] = []
    run = TrackedRun("scored", url=server, metric="accuracy", say=said.append, **FAST_RETRY)
    for i, e in enumerate(overfit_epochs(10)):
        run.log_epoch(i, e["train_loss"], e["valid_loss"], accuracy=accuracy[i])
    run.say_restored(6)
    run.say_restored(4)
    assert said == [
        "put back the weights of epoch 6 (accuracy 0.851; best seen 0.853 at epoch 4)",
        "put back the weights of epoch 4 (accuracy 0.853; the best seen)",
    ]


def test_the_underfitting_advice_is_said_once(server: str) -> None:
    """A model whose training loss stays where guessing puts it: the advice is printed at the
    first end of the report, and finishing again says the verdict alone."""
    said: list[str] = []
    run = TrackedRun("flat", url=server, data={"n_classes": 10}, say=said.append, **FAST_RETRY)
    for i in range(10):
        run.log_epoch(i, 2.30 - 0.001 * i, 2.31 + 0.0005 * (i % 2))
    run.finish()
    run.finish()
    assert run.diagnosis is not None and run.diagnosis.verdict == "underfitting"
    assert said[0].startswith(f"underfitting — {run.diagnosis.summary}")
    assert said[1].startswith("underfitting (advice above)")
    assert run.diagnosis.summary not in said[1]


def test_the_stop_rule_counts_the_services_decision_in_a_row() -> None:
    """``should_stop`` is the service's decision; an older service's answer without it counts
    by its verdict. ``confirm`` answers in a row stop, and the kept epoch is that of the answer
    that stopped; an answer that does not say stop starts the count again."""
    rule = LiveStop(confirm=2)
    assert not rule.see({"verdict": "overfitting", "should_stop": False, "stop_epoch": 3})
    assert not rule.see({"verdict": "healthy", "should_stop": True, "stop_epoch": 4})
    assert rule.held == 1
    assert not rule.see({"verdict": "overfitting", "should_stop": False, "stop_epoch": 4})
    assert rule.held == 0 and rule.kept_epoch == 4
    assert not rule.see({"verdict": "overfitting", "stop_epoch": 5})  # an older service
    assert not rule.see(None)  # no answer: counts for nothing either way
    assert rule.see({"verdict": "diverging", "stop_epoch": 6})
    assert rule.stopped and rule.held == 2 and rule.kept_epoch == 6
    assert rule.see({"verdict": "healthy", "should_stop": False, "stop_epoch": 9})
    assert rule.kept_epoch == 6, "the answer that stopped names the weights to keep"
    patient = LiveStop(confirm=3)
    verdicts = ["overfitting", "overfitting", "healthy", "overfitting", "no_signal", "overfitting"]
    assert [patient.see({"verdict": v, "stop_epoch": 1}) for v in verdicts] == [
        False, False, False, False, False, True,
    ]  # fmt: skip
    # By default the service's answer is enough (its rule already asks two looks in a row), and
    # an older service's verdict needs two in a row.
    assert LiveStop().see({"verdict": "overfitting", "should_stop": True, "stop_epoch": 2})
    older = LiveStop()
    assert not older.see({"verdict": "overfitting", "stop_epoch": 2})
    assert older.see({"verdict": "overfitting", "stop_epoch": 2})


def test_the_weights_kept_include_the_epochs_the_stop_may_move_to() -> None:
    """Besides the stop epoch and each signal's best, the diagnosis's ``candidates`` are epochs
    whose weights a callback keeps; fractional epochs count, anything else does not."""
    run = TrackedRun("keep", url="http://127.0.0.1:9")
    diagnosis = {
        "verdict": "overfitting",
        "stop_epoch": 6,
        "evidence": {
            "signals": {"metric": {"best_epoch": 4}, "valid_loss": {"best_epoch": 6}},
            "candidates": [5, 7.5, True, "8", None],
        },
    }
    run.run = Run.of({"id": 1, "n_epochs": 10, "diagnosis": diagnosis})
    assert run.epochs_to_keep() == {4, 5, 6, 7.5}


def test_an_epoch_record_keeps_integers_and_takes_steps_learning_rates_and_no_training_loss() -> (
    None
):
    assert epoch_record(np.int64(3), 1, 2) == {
        "epoch": 3, "train_loss": 1.0, "valid_loss": 2.0, "metrics": {},
    }  # fmt: skip
    record = epoch_record(0.25, None, 2, step=np.int64(40), lr=1e-3, accuracy=np.float32(0.5))
    assert record == {
        "epoch": 0.25, "train_loss": None, "valid_loss": 2.0, "metrics": {"accuracy": 0.5},
        "step": 40, "lr": 1e-3,
    }  # fmt: skip
    assert type(record["step"]) is int


def replay(run: TrackedRun, curve: dict[str, Any]) -> None:
    for e in curve["epochs"]:
        run.log_epoch(e["epoch"], e["train_loss"], e["valid_loss"], **e["metrics"])
        if run.should_stop:
            break


def test_the_end_of_training_prints_the_finished_runs_verdict(server: str) -> None:
    """Udacity's Keras MNIST run, whose validation loss rose beyond its noise only at its last
    evaluation: the last look waits for a confirmation, and finishing says what the run
    reported whole is told, overfitting, with its remedy."""
    curve = json.loads(UDACITY_MNIST.read_text())
    said: list[str] = []
    facts = {"metric": curve["metric"], "data": {"n_classes": curve["n_classes"]}}
    run = TrackedRun("udacity", url=server, say=said.append, **facts, **FAST_RETRY)
    replay(run, curve)
    assert run.diagnosis is not None and run.diagnosis.verdict == "healthy"
    run.finish()
    whole = Client(server).report("udacity-whole", curve["epochs"], **facts)
    finished, reported = run.diagnosis, whole.diagnosis
    assert finished is not None and reported is not None
    assert finished.verdict == reported.verdict == "overfitting"
    assert run.stop_epoch == reported.stop_epoch
    assert said == [run.summary_line()] and said[0].startswith("overfitting — ")
    assert "next: more_data" in said[0]


def test_a_run_the_live_rule_stopped_ends_on_the_verdict_it_stopped_on(server: str) -> None:
    said: list[str] = []
    run = TrackedRun(
        "stopped", url=server, stop_when_overfitting=True, say=said.append, **FAST_RETRY
    )
    replay(run, {"epochs": [{**e, "metrics": {}} for e in overfit_epochs(30)]})
    assert run.should_stop
    stopped = run.diagnosis
    run.finish()
    assert run.diagnosis == stopped and run.stop_epoch == 6
    assert said[0].startswith("stopping: overfitting") and said[1] == run.summary_line()


def test_a_service_away_at_the_end_leaves_the_last_looks_verdict(tmp_path: Path) -> None:
    port = free_port()
    curve = json.loads(UDACITY_MNIST.read_text())
    said: list[str] = []
    run = TrackedRun(
        "away",
        url=f"http://127.0.0.1:{port}",
        metric=curve["metric"],
        say=said.append,
        retry_s=(0.05, 0.2),
        finish_timeout_s=1.0,
    )
    with served(tmp_path / "away.db", port=port):
        replay(run, curve)
    run.finish()
    assert run.diagnosis is not None and run.diagnosis.verdict == "healthy"
    assert said == [run.summary_line()]
