"""Schemathesis fuzzes every operation of the OpenAPI document against the real app, on SQLite
and PostgreSQL, with auth off and with auth required (a valid token sent), with all its checks:
no server error; every answer's status code, content type, headers and body as the document
declares them; every request the document allows accepted and every one it forbids refused.

The database holds a lineage of runs and verifications first, and half of the generated path ids
are those rows', so that the fuzzer reaches past "not found" into each operation's work.
"""

import re
from collections.abc import Iterator
from typing import Any, NamedTuple, cast

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, CheckContext, CheckFunction, load_all_checks
from schemathesis.core.transport import Response
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi import checks
from starlette.types import ASGIApp

from app.db import Database
from app.main import create_app
from app.schemas import ID_MAX
from app.services.projects import create_project
from app.services.runs import encode_cursor
from app.settings import Settings
from tests.conftest import healthy_epochs, make_client, overfit_epochs
from tests.databases import BACKENDS, fresh_database
from tests.worker.test_verification_api import RECIPE

# Rules the document states in words, since JSON Schema cannot say them: epochs in order
# (within a request, and after the stored ones when appended; a trial's curve too), a named
# metric in every epoch, a trial's curve that is its own (one record per epoch from 0, no more
# than it trains, each with its training loss and its task's metric), a parent run and a
# project that exist in the token's project, seed counts that agree with each other, a recipe
# that agrees with its report (task, architecture, training-set size), a script's trainer whose
# smaller_model knob has the models it switches between, an
# Idempotency-Key sent again with the body it came with, a cursor that some page gave (the
# fuzzing phase draws those, the coverage phase any string of the cursor's pattern), what
# free-form JSON may hold (model and data facts beyond the keys declared, a recipe's dataset
# spec, whose kinds and options app.builder.datasets checks, its paths inside the data roots).
# A request the schema allows may break them; the server refuses it with 422 saying which, and
# that is no valid request rejected. Any other refusal of schema-valid data still fails.
RULE_IN_WORDS = (
    r"((epochs: )?epochs|curve)\[\d+\]\.(epoch|step): \S+ \S+ is (duplicated|out of order) "
    r"\(previous .*\)"
    r"|epochs\[\d+\]\.metrics: metric '.*' is named but missing"
    r"|curve\[\d+\]\.epoch: epoch \S+ where the trial's epoch \d+ belongs .*"
    r"|curve\[\d+\]\.train_loss: a trial's epochs carry their training loss"
    r"|curve\[\d+\]\.metrics\..+: the trial's metric '.*' is missing"
    r"|curve: \d+ epochs, more than the \d+ trial \d+ trains"
    r"|parent_id: unknown run id \d+"
    r"|project: unknown project '.*'"
    r"|(min_seeds|max_seeds): \d+ is more than .*"
    r"|idempotency-key: '.*' was already used for a different request.*"
    r"|cursor: malformed cursor"
    r"|(model|data)[.\[].*: (names )?must not contain NUL characters"
    r"|(model|data)[.\[].*: (must be a finite number|integer outside the 64-bit range)"
    r"|(model|data)[.\[].*: nested more than \d+ levels deep"
    r"|recipe\.data(\..*)?: .*"
    r"|recipe\.(task|arch): the recipe (trains|builds) .*"
    r"|trainer: (models|settings\.arch): .*"
)
# A refusal's message: its errors, each by such a rule, joined by "; ".
RULES_IN_WORDS = re.compile(f"({RULE_IN_WORDS})(; ({RULE_IN_WORDS}))*", re.DOTALL)


def positive_data_acceptance(
    ctx: CheckContext, response: Response, case: schemathesis.Case[Any]
) -> bool | None:
    """Schemathesis's check of that name, but for a refusal by one of RULES_IN_WORDS."""
    if response.status_code == 422:
        message = str(response.json().get("message", ""))
        if RULES_IN_WORDS.fullmatch(message):
            return None
    return checks.positive_data_acceptance(ctx, response, case)


# Every check schemathesis has (its command line's --checks all), the one above standing in for
# its namesake.
load_all_checks()
CHECKS_RUN = [
    positive_data_acceptance if check is checks.positive_data_acceptance else check
    for check in cast(list[CheckFunction], CHECKS.get_all())
]
# The cursor's format: a page's next_cursor, which names a run id (it need not exist).
schemathesis.openapi.format("cursor", st.integers(1, ID_MAX).map(encode_cursor))
# The document does not depend on the database, so the tests are made from it at collection
# (schemathesis.pytest.from_fixture, which would load it from a fixture, fails under pytest 9.2:
# it rewrites Function._nodeid, which pytest 9.2 items no longer have).
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(database_url="sqlite://")).openapi())
# Generated cases per operation and app (besides the schema's examples and the coverage phase's
# boundary cases): the whole file takes about 20 seconds per backend on two cores.
MAX_EXAMPLES = 50
# The rows seed() makes in a fresh database, by the path parameter that names them.
EXISTING = {"run_id": [1, 2, 3, 4], "job_id": [1, 2]}


class Fuzzed(NamedTuple):
    app: ASGIApp
    headers: dict[str, str]


@SCHEMA.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """Half of the valid ids are swapped for a seeded row's; invalid ones stay as generated."""
    params = path_parameters or {}
    swappable = {
        k: st.sampled_from(EXISTING[k])
        for k, v in params.items()
        if k in EXISTING and isinstance(v, int) and 1 <= v <= ID_MAX
    }
    if not swappable:
        return st.just(path_parameters)
    return st.one_of(
        st.just(params),
        st.fixed_dictionaries({k: st.just(v) for k, v in params.items()} | swappable),
    )


def project_token(url: str) -> str:
    db = Database(url)
    with db.session() as session:
        token = create_project(session, "fuzz")[1]
    db.dispose()
    return token


def seed(client: TestClient, headers: dict[str, str]) -> None:
    """A reproducible run, its child, an unrelated run and one without epochs yet; one queued
    and one cancelled verification: the rows of EXISTING, in a fresh database."""

    def post(path: str, body: dict[str, Any], expected: int) -> int:
        r = client.post(path, json=body, headers=headers)
        assert r.status_code == expected, r.text
        row_id: int = r.json()["id"]
        return row_id

    parent = post(
        "/api/v1/runs",
        {"name": "digits", "recipe": RECIPE, "epochs": overfit_epochs(), "tags": ["fuzz"]},
        201,
    )
    child = post("/api/v1/runs", {"parent_id": parent, "epochs": overfit_epochs(8)}, 201)
    other = post("/api/v1/runs", {"name": "healthy", "epochs": healthy_epochs()}, 201)
    started = post("/api/v1/runs", {"name": "started", "epochs": []}, 201)  # takes any epochs
    queued = post(f"/api/v1/runs/{parent}/verifications", {"rung": "augment"}, 202)
    cancelled = post(f"/api/v1/runs/{parent}/verifications", {"rung": "mixup"}, 202)
    r = client.post(f"/api/v1/verifications/{cancelled}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    assert {"run_id": [parent, child, other, started], "job_id": [queued, cancelled]} == EXISTING


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_reason: str | None
) -> Iterator[tuple[str, str]]:
    """A fresh database (so that the seeded ids are EXISTING) and a project's token."""
    if request.param == "postgresql" and pg_reason:
        pytest.skip(pg_reason)
    with fresh_database(request.param, tmp_path_factory.mktemp("fuzz")) as url:
        token = project_token(url)
        with make_client(url, auth="required") as client:
            seed(client, {"Authorization": f"Bearer {token}"})
        yield url, token


@pytest.fixture(scope="module", params=["auto", "required"], ids=["auth-off", "auth-required"])
def fuzzed(request: pytest.FixtureRequest, fuzz_database: tuple[str, str]) -> Iterator[Fuzzed]:
    """The app, with auth off (on loopback) or required, and what every request sends: nothing,
    or the token of the project the rows were seeded in."""
    url, token = fuzz_database
    app = make_client(url, auth=request.param).app
    yield Fuzzed(app, {"Authorization": f"Bearer {token}"} if request.param == "required" else {})
    # Schemathesis starts an app's lifespan at its first request and keeps it to the exit.
    shutdown_lifespans()


def shorten_long_poll(case: schemathesis.Case[Any]) -> None:
    """A worker's claim may wait up to 20 s for a trial, longer than a fuzzed request is given:
    valid waits are shortened to a fifth of a second (invalid ones stay, to be refused). On the
    case itself, so that examples and boundary cases are shortened too, not only generated ones."""
    body = case.body
    if case.operation.path != "/api/v1/trials/claim" or not isinstance(body, dict):
        return
    wait = body.get("wait_s")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 <= wait <= 20:
        case.body = {**body, "wait_s": min(wait, 0.2)}


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run, so that CI is reproducible
    database=None,
    # Drawing whole run reports is slow on a loaded machine; that says nothing of the API.
    suppress_health_check=[HealthCheck.too_slow],
)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case[Any], fuzzed: Fuzzed
) -> None:
    shorten_long_poll(case)
    # A schema loaded from a dict has no base URL: the app's TestClient host stands in.
    case.call_and_validate(
        base_url="http://testserver", app=fuzzed.app, headers=fuzzed.headers, checks=CHECKS_RUN
    )
