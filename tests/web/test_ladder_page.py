"""The run page's ladder, on SQLite and PostgreSQL: each rung with its status and reason, this
run's own verdicts and the record of similar runs, read when the page is rendered."""

import html
import re

from fastapi.testclient import TestClient

from tests.api.test_evidence import judge, reported
from tests.api.test_runs import post


def rung_item(page: str, rung: str) -> str:
    found = re.search(rf'<li class="rung ([^"]*)" id="rung-{rung}">(.*?)</li>', page, re.S)
    assert found is not None, f"no {rung} step on the page"
    return html.unescape(f"{found.group(1)} | {found.group(2)}")


def test_run_page_shows_evidence_and_a_demoted_rung(client: TestClient, db_url: str) -> None:
    run = post(client, name="pets", **reported("resnet34", 2000))
    assert run["recommendation"]["rung"] == "augment"  # nothing verified yet
    page = client.get(f"/runs/{run['id']}").text
    assert "Similar runs" not in page
    assert rung_item(page, "augment").startswith("recommended |")

    for size in (1000, 2000, 4000):
        similar = post(client, **reported("resnet50", size))
        judge(db_url, similar["id"], "augment", ("refuted", -0.02))
    judge(db_url, run["id"], "dropout_head", ("inconclusive", 0.003))

    # Rendered now: the verdicts that arrived since the report count.
    page = client.get(f"/runs/{run['id']}").text
    ladder = page[page.index('<ol class="ladder">') :]
    assert ladder.index('id="rung-mixup"') < ladder.index('id="rung-augment"')
    augment = rung_item(page, "augment")
    assert augment.startswith("demoted |")
    assert "Tried after mixup: refuted in 3 of 3 verifications on similar runs" in augment
    assert "Similar runs: 0 confirmed, 3 refuted, 0 inconclusive (3 runs)" in augment
    assert "median effect -0.0200" in augment
    assert rung_item(page, "mixup").startswith("recommended |")
    head = rung_item(page, "dropout_head")
    assert head.startswith("open |")
    assert "verified" in head and 'class="badge inconclusive"' in head
    assert "inconclusive; it stays on the ladder" in head
    assert "Similar runs: 0 confirmed, 0 refuted, 1 inconclusive (1 run)" in head
    assert "Similar runs" not in rung_item(page, "dropout_body")
    # The page's action follows the ladder it shows.
    assert 'class="action">Train with mixup' in page
