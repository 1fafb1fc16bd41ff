"""The verification page's trials in a real browser (Debian's Chromium driven by Playwright): each
training listed with its worker and device, its progress updated live while it runs, its curve
drawn; and the per-seed charts of a race (four lines each) with whole-epoch ticks and their
legends inside their cards. The trainings are handed in through the worker API as HTTP workers
do, by named workers, with made-up curves (a quick test; test_browser.py trains real ones)."""

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.conftest import overfit_epochs
from tests.servers import served
from tests.web import test_browser as shared
from tests.worker.test_verification_api import RECIPE

# Chromium and a page as test_browser.py starts them (and skipped as loudly without Chromium).
browser, page, pytestmark, SHOTS = shared.browser, shared.page, shared.pytestmark, shared.SHOTS

RACE = ["augment", "mixup", "dropout_head"]
EPOCHS = 5
LIFT = {"": 0.0, "augment": 0.004, "mixup": 0.008, "dropout_head": 0.012}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # No embedded worker: the test's own HTTP workers take the trials.
    with served(tmp_path_factory.mktemp("trials") / "web.db", ADVISOR_WORKER="off") as url:
        yield url


def curve(trial: dict[str, Any], n: int) -> list[dict[str, Any]]:
    # Close enough that the race cuts no lane: every candidate runs all its epochs.
    lift = LIFT[trial["rung"] if trial["role"] == "candidate" else ""]
    return [
        {"epoch": i, "train_loss": 1.0 / (i + 1), "valid_loss": 0.5 + 0.01 * i,
         "metrics": {"accuracy": 0.6 + 0.05 * i + lift + 0.001 * trial["seed"]}}
        for i in range(n)
    ]  # fmt: skip


class HttpWorker:
    """A worker as `advisor worker --server` speaks to the service, training nothing."""

    def __init__(self, url: str, name: str) -> None:
        self.http = httpx.Client(base_url=f"{url}/api/v1/trials", timeout=30)
        self.name = name

    def claim(self) -> dict[str, Any]:
        r = self.http.post("/claim", json={"worker": self.name})
        assert r.status_code == 200, r.text
        trial: dict[str, Any] = r.json()
        return trial

    def beat(self, trial: dict[str, Any], n: int) -> None:
        r = self.http.post(f"/{trial['id']}/heartbeat",
                           json={"worker": self.name, "curve": curve(trial, n)})  # fmt: skip
        assert r.status_code == 200, r.text

    def hand_in(self, trial: dict[str, Any], device: str) -> None:
        body = {"worker": self.name, "curve": curve(trial, EPOCHS), "n_train": 1437,
                "n_classes": 10, "duration_s": 2.5, "device": device}  # fmt: skip
        assert self.http.post(f"/{trial['id']}/complete", json=body).status_code == 204


def row_texts(page: Page, trial_id: int) -> dict[str, str]:
    row = f"tr[data-trial='{trial_id}']"
    names = ("status", "epochs-text", "worker", "device", "started", "finished", "duration")
    return {n: page.inner_text(f"{row} .t-{n}") for n in names}


def test_the_page_shows_each_trial_live_and_the_race_charts_fit(server: str, page: Page) -> None:
    recipe = {**RECIPE, "epochs": EPOCHS}
    run = httpx.post(f"{server}/api/v1/runs", json={
        "name": "browser-trials", "recipe": recipe, "epochs": overfit_epochs()}).json()  # fmt: skip
    job = httpx.post(f"{server}/api/v1/runs/{run['id']}/verifications",
                     json={"rungs": RACE, "seeds": 2}).json()  # fmt: skip
    assert job["protocol"]["race"], job
    gpu, cpu = HttpWorker(server, "gpu-box-7"), HttpWorker(server, "cpu-box-3")
    first = gpu.claim()
    gpu.beat(first, 1)

    page.goto(f"{server}/verifications/{job['id']}")
    assert page.locator("table.trials tbody tr").count() == 2 * (1 + len(RACE))
    shown = row_texts(page, first["id"])
    assert shown["status"] == "running" and shown["worker"] == "gpu-box-7"
    assert shown["epochs-text"] == f"1/{EPOCHS}" and shown["device"] == "—"
    assert re.fullmatch(r"\d\d:\d\d:\d\d", shown["started"]) and shown["finished"] == "—"
    queued = page.locator("table.trials .t-status.queued").count()
    assert queued == 2 * (1 + len(RACE)) - 1
    page.wait_for_function("(window.advisorTrialCharts || []).length === 8")
    page.evaluate("window.notReloaded = true")

    # The next heartbeat's epoch shows without a reload: the row and its chart follow.
    gpu.beat(first, 2)
    page.wait_for_function(
        f"document.querySelector(\"tr[data-trial='{first['id']}'] .t-epochs-text\")"
        f".textContent === '2/{EPOCHS}'"
    )
    assert page.evaluate("window.notReloaded") is True
    points = page.evaluate(
        f"""window.advisorTrialCharts.find(c =>
            c.root.parentElement.dataset.trial === '{first["id"]}').data[1].length"""
    )
    assert points == 2
    assert page.inner_text("#progress-text").startswith("0 of 8 trainings done, 1 running")
    page.screenshot(path=SHOTS / "verification-trials-running.png", full_page=True)

    gpu.hand_in(first, "cuda:0")
    for _ in range(2 * (1 + len(RACE)) - 1):
        cpu.hand_in(cpu.claim(), "cpu")
    # Live progress reloads the page when the verification ends.
    page.wait_for_selector("#verdict-sentence", timeout=30_000)
    assert page.inner_text("#status") == "succeeded"
    rows = [row_texts(page, int(i)) for i in page.locator("table.trials tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.trial)")]  # fmt: skip
    assert len(rows) == 8
    assert rows[0]["worker"] == "gpu-box-7" and rows[0]["device"] == "cuda:0"
    assert all(r["worker"] == "cpu-box-3" and r["device"] == "cpu" for r in rows[1:])
    assert all(r["status"] == "done" and r["epochs-text"] == f"{EPOCHS}/{EPOCHS}" for r in rows)
    assert all(r["duration"] == "2.5 s" and r["finished"] != "—" for r in rows)

    # The per-seed charts: the baseline and three candidates each.
    page.wait_for_function("(window.advisorCharts || []).length === 2")
    assert page.evaluate("window.advisorCharts.map(c => c.series.length - 1)") == [4, 4]
    ticks = page.evaluate(
        "[...window.advisorCharts, ...window.advisorTrialCharts].map(c => c.axes[0]._values)"
    )
    for labels in ticks:
        assert len(labels) >= 2 and all(re.fullmatch(r"\d+", v) for v in labels), labels
    boxes = page.evaluate("""[...document.querySelectorAll('.charts figure')].map(f => {
        const box = r => ({top: r.top, bottom: r.bottom, left: r.left, right: r.right});
        return {card: box(f.getBoundingClientRect()),
                legend: box(f.querySelector('.u-legend').getBoundingClientRect())}; })""")
    assert len(boxes) == 2
    for b in boxes:
        card, legend = b["card"], b["legend"]
        assert legend["bottom"] - legend["top"] > 30, "four lines wrap the legend to two rows"
        assert card["top"] <= legend["top"] and legend["bottom"] <= card["bottom"], b
        assert card["left"] <= legend["left"] and legend["right"] <= card["right"], b
    table_top = page.evaluate("document.querySelector('table.ranking').getBoundingClientRect().top")
    assert all(b["card"]["bottom"] <= table_top for b in boxes)
    page.screenshot(path=SHOTS / "verification-trials.png", full_page=True)
