import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.advisor.curves import Curves
from app.advisor.diagnosis import Diagnosis, Verdict, diagnose
from app.db import Database
from app.main import create_app
from app.schemas import RunCreate
from app.services.projects import Scope, ensure_project
from app.services.runs import create_run
from app.settings import Settings
from tests.databases import BACKENDS, fresh_database, postgres_unreachable, wipe

DATA = Path(__file__).parent / "data"
RUNG_ORDER = [
    "more_data", "augment", "mixup", "batchnorm", "dropout_head", "dropout_body", "smaller_model",
]  # fmt: skip


@pytest.fixture(scope="session")
def pg_reason() -> str | None:
    return postgres_unreachable()


@pytest.fixture(scope="session", params=BACKENDS)
def backend_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_reason: str | None
) -> Iterator[str]:
    """One migrated database per backend for the whole session."""
    if request.param == "postgresql" and pg_reason:
        pytest.skip(pg_reason)
    with fresh_database(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture
def db_url(backend_url: str) -> Iterator[str]:
    yield backend_url
    wipe(backend_url)


def service_run(db: Database, report: dict[str, Any]) -> tuple[Scope, int]:
    """``report`` stored straight through the service in the default project: a scope that sees
    it, and the run's id."""
    with db.session() as session:
        project = ensure_project(session, "default")
        body = RunCreate.model_validate(report)
        run_id = create_run(session, (project.id, project.name), body, max_epochs=100)["id"]
    return Scope(project.id, project.name, sees_all=True), run_id


def make_client(url: str, **settings: Any) -> TestClient:
    """A client of an app on ``url``; its embedded worker stays off unless a test asks for it."""
    settings.setdefault("worker", "off")
    settings.setdefault("worker_threads", 1)  # two cores, shared with the server and other tests
    return TestClient(create_app(Settings(database_url=url, **settings)))


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with make_client(db_url) as c:
        yield c


def epochs_from(
    train: list[float], valid: list[float], acc: list[float] | None = None
) -> list[dict[str, Any]]:
    return [
        {
            "epoch": i,
            "train_loss": t,
            "valid_loss": v,
            "metrics": {"accuracy": acc[i]} if acc else {},
        }
        for i, (t, v) in enumerate(zip(train, valid, strict=True))
    ]


# A real run (Udacity's Keras MNIST notebook) whose validation loss rose beyond its noise only
# at its last evaluation: reported one evaluation at a time, its last look waits to confirm it.
UDACITY_MNIST = (
    Path(__file__).parent
    / "data"
    / "real_curves_holdout"
    / "udacity_pytorch"
    / "udacity-keras-mnist-mlp-10ep.json"
)


def overfit_epochs(n: int = 20) -> list[dict[str, Any]]:
    """A textbook U-shaped validation loss with a falling training loss."""
    train = [1.5 * 0.8**i + 0.01 for i in range(n)]
    valid = [0.6 + 0.004 * (i - 6) ** 2 for i in range(n)]
    return epochs_from(train, valid)


def overfitting_diagnosis() -> Diagnosis:
    """The diagnosis of :func:`overfit_epochs`, for tests of what follows an overfitting run."""
    diagnosis = diagnose(Curves.of(overfit_epochs()))
    assert diagnosis.verdict == Verdict.OVERFITTING
    return diagnosis


def healthy_epochs(n: int = 20) -> list[dict[str, Any]]:
    train = [1.5 * 0.85**i + 0.2 for i in range(n)]
    valid = [1.4 * 0.85**i + 0.3 for i in range(n)]
    return epochs_from(train, valid)


def load_curves() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((DATA / "curves").glob("*.json"))]
