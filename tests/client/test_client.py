"""The light client against a real server process: every call, typed results, errors that carry
the service's message and field, the synchronous and the asynchronous flavour alike."""

import asyncio
from pathlib import Path

import pytest
from overfit_advisor import AdvisorError, AdvisorUnavailable, AsyncClient, Client

from tests.conftest import healthy_epochs, overfit_epochs
from tests.servers import free_port, served
from tests.worker.test_verification_api import RECIPE


def test_report_read_list_and_lineage(server: str) -> None:
    with Client(server) as client:
        run = client.report("client-overfit", overfit_epochs(), metric=None, tags=None)
        assert run.verdict == "overfitting" and run.diagnosis is not None
        assert run.diagnosis.stop_epoch == 6 and run.diagnosis.signal == "valid_loss"
        assert run.recommendation is not None and run.recommendation.rung == "more_data"
        assert client.page_url(run) == f"{server}/runs/{run.id}"
        again = client.run(run.id)
        assert again.raw == run.raw
        child = client.report("client-child", healthy_epochs(), parent_id=run.id)
        tree = client.lineage(run.id)
        assert [d.id for d in tree.descendants] == [child.id]
        assert client.lineage(child.id).ancestors[0].id == run.id
        for i in range(5):
            client.report(f"client-page-{i}", overfit_epochs(5))
        names = [r.name for r in client.runs(name="client-page-", limit=2)]
        assert names == [f"client-page-{i}" for i in reversed(range(5))]  # three pages


def test_start_a_run_and_log_epochs_one_by_one(server: str) -> None:
    with Client(server) as client:
        run = client.start_run("client-live", metric="accuracy")
        assert run.n_epochs == 0 and run.verdict == "insufficient_data"
        for e in overfit_epochs():
            run = client.log_epoch(
                run.id, e["epoch"], e["train_loss"], e["valid_loss"], accuracy=0.9
            )
        assert run.n_epochs == 20 and run.verdict == "overfitting"
        assert run.raw["metric"] == {"name": "accuracy", "higher_is_better": True}


def test_refusals_carry_the_message_and_the_field(server: str) -> None:
    with Client(server) as client:
        with pytest.raises(AdvisorError) as bad:
            client.report("bad", [{"epoch": 0, "train_loss": -1.0, "valid_loss": 1.0}])
        assert bad.value.status == 422
        assert bad.value.field is not None and "train_loss" in bad.value.field
        assert "train_loss" in bad.value.message
        with pytest.raises(AdvisorError) as missing:
            client.run(999_999)
        assert missing.value.status == 404 and "not found" in missing.value.message
        with pytest.raises(AdvisorError) as no_recipe:
            client.verify(client.report("plain", overfit_epochs()).id)
        assert no_recipe.value.status in (409, 422)


def test_an_unreachable_service_is_its_own_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client,
        pytest.raises(AdvisorUnavailable),
    ):
        client.run(1)


def test_the_async_flavour_sends_the_same_calls(server: str) -> None:
    async def go() -> tuple[int, str, list[str]]:
        async with AsyncClient(server) as client:
            run = await client.report("async-run", overfit_epochs())
            fetched = await client.run(run.id)
            names = [r.name async for r in client.runs(name="async-run", limit=1)]
            with pytest.raises(AdvisorError):
                await client.run(999_999)
            return fetched.id - run.id, fetched.verdict, names

    assert asyncio.run(go()) == (0, "overfitting", ["async-run"])


def test_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With auth required, the client sends ADVISOR_TOKEN; a wrong one is refused clearly."""
    import subprocess
    import sys

    db = tmp_path / "auth.db"
    with served(db, ADVISOR_AUTH="required") as url:
        created = subprocess.run(
            [sys.executable, "-m", "app.cli", "project", "create", "team"],
            env={"ADVISOR_DATABASE_URL": f"sqlite:///{db}", "PATH": ""},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        token = created.stdout.strip().splitlines()[-1]
        monkeypatch.setenv("ADVISOR_URL", url)
        monkeypatch.setenv("ADVISOR_TOKEN", token)
        with Client() as client:
            assert client.report("authed", overfit_epochs()).project == "team"
        monkeypatch.setenv("ADVISOR_TOKEN", "oa_wrong")
        with Client() as client, pytest.raises(AdvisorError) as refused:
            client.report("refused", overfit_epochs())
        assert refused.value.status == 401 and refused.value.message


def test_verify_and_wait_with_a_progress_bar(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real verification by the server's embedded worker, followed with ``wait``."""
    with Client(server) as client:
        run = client.report("client-verify", overfit_epochs(), recipe=RECIPE)
        job = client.verify(run.id, rung="dropout_head", seeds=1, epochs=1)
        assert job.status == "queued" and job.rung == "dropout_head"
        done = client.wait(job.id, progress=True, poll_s=0.2)
    assert done.status == "succeeded" and done.verdict in ("confirmed", "refuted", "inconclusive")
    assert done.result is not None
    bar = capsys.readouterr().err
    assert "verifying dropout_head" in bar and "succeeded" in bar
