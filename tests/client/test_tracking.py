"""``track`` in a hand-written loop against a real server process that comes and goes: the loop
never sees an exception, every epoch arrives once, the diagnosis is printed at the end."""

from pathlib import Path
from typing import Any

import httpx
import pytest
from overfit_advisor import Client, Snapshots, TrackedRun, track

from tests.client.conftest import FAST_RETRY
from tests.conftest import overfit_epochs
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
    assert run.run is not None
    stored = Client(server).run(run.run.id)
    assert [e["epoch"] for e in stored.epochs] == [e["epoch"] for e in epochs]
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
    assert len(transport.lost) == 2, "both the creation and an append lost their answer"
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
