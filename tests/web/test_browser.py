"""The pages in a real browser (Debian's Chromium driven by Playwright): browse, filter, open a
run, check that the charts drew real points, start a verification from the page and watch it
succeed. A screenshot of each page goes to artifacts/screenshots/."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import healthy_epochs, overfit_epochs
from tests.servers import served
from tests.worker.test_verification_api import RECIPE

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"CHROMIUM MISSING at {CHROMIUM}: browser tests did NOT run (make test installs it)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db_file = tmp_path_factory.mktemp("browser") / "web.db"
    with served(db_file, ADVISOR_WORKER_POLL_S="0.1") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # launch() starts Chromium with a fresh, temporary profile directory of its own.
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    p = browser.new_page(viewport={"width": 1280, "height": 1000})
    yield p
    p.close()


def test_browse_filter_open_a_run_and_see_its_charts(server: str, page: Page) -> None:
    epochs = overfit_epochs()
    for e in epochs:
        e["metrics"] = {"accuracy": 0.9 - 0.002 * abs(e["epoch"] - 6)}
    body = {"name": "browser-overfit", "metric": {"name": "accuracy"}, "epochs": epochs}
    over = httpx.post(f"{server}/api/v1/runs", json=body).json()
    httpx.post(
        f"{server}/api/v1/runs", json={"name": "browser-healthy", "epochs": healthy_epochs()}
    )
    page.goto(server + "/")
    page.screenshot(path=SHOTS / "runs.png", full_page=True)
    assert page.locator("table.runs tbody tr").count() >= 2
    page.select_option("select[name=verdict]", "overfitting")
    page.click("button:has-text('Filter')")
    page.wait_for_url("**/?*verdict=overfitting*")
    names = page.locator("table.runs tbody td:first-child").all_inner_texts()
    assert "browser-overfit" in names and "browser-healthy" not in names
    page.click("text=browser-overfit")
    page.wait_for_url(f"**/runs/{over['id']}")
    page.wait_for_function("(window.advisorCharts || []).length === 2")
    points = page.evaluate("window.advisorCharts.map(c => c.data[1].filter(v => v != null).length)")
    assert points == [20, 20]
    # The canvases hold drawn pixels, not a blank surface.
    inked = page.evaluate("""[...document.querySelectorAll('.chart canvas')].map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })""")
    assert all(n > 1000 for n in inked), inked
    assert "overfitting" in page.inner_text("h1")
    page.screenshot(path=SHOTS / "run.png", full_page=True)
    page.goto(server + "/ladder")
    assert page.locator("ol.ladder li").count() == 7
    page.screenshot(path=SHOTS / "ladder.png", full_page=True)


def test_start_a_verification_from_the_page(server: str, page: Page) -> None:
    run = httpx.post(f"{server}/api/v1/runs", json={
        "name": "browser-verify", "recipe": RECIPE, "epochs": overfit_epochs()}).json()  # fmt: skip
    page.goto(f"{server}/runs/{run['id']}")
    page.select_option("select[name=rung]", "dropout_head")
    page.fill("input[name=seeds]", "2")
    page.click("button:has-text('Verify this remedy')")
    page.wait_for_url("**/verifications/*")
    page.screenshot(path=SHOTS / "verification-running.png", full_page=True)
    # Live progress reloads the page when the job is done.
    page.wait_for_selector("#verdict-sentence", timeout=240_000)
    assert page.inner_text("#status") == "succeeded"
    sentence = page.inner_text("#verdict-sentence")
    assert "dropout_head" in sentence and "paired seeds" in sentence
    assert page.locator("table.per-seed tbody tr").count() == 2
    # The four trainings, each with the embedded worker that trained it, on the CPU.
    assert page.locator("table.trials .t-status.done").count() == 4
    assert set(page.locator("table.trials .t-device").all_inner_texts()) == {"cpu"}
    assert "—" not in page.locator("table.trials .t-worker").all_inner_texts()
    page.wait_for_function("(window.advisorCharts || []).length === 2")
    page.screenshot(path=SHOTS / "verification.png", full_page=True)


def colour_pixels(page: Page, selector: str, rgb: tuple[int, int, int]) -> int:
    """How many pixels of the chart's canvas are (about) this colour."""
    return int(
        page.evaluate(
            """([selector, [r, g, b]]) => {
        const c = document.querySelector(selector + ' canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
          if (Math.abs(d[i] - r) < 12 && Math.abs(d[i + 1] - g) < 12 && Math.abs(d[i + 2] - b) < 12
              && d[i + 3] > 200) n++;
        return n; }""",
            [selector, list(rgb)],
        )
    )


def test_the_run_page_marks_where_to_stop_and_where_it_began(server: str, page: Page) -> None:
    """A run that overfits by its validation loss while accuracy stays flat: the loss chart
    carries the green stop line and the red onset line, the evidence names both epochs."""
    valid = [0.6 + 0.004 * (i - 6) ** 2 for i in range(20)]
    epochs = [
        {"epoch": i, "train_loss": 1.5 * 0.8**i + 0.01, "valid_loss": v,
         "metrics": {"accuracy": 0.9 + 0.001 * (i % 2)}}
        for i, v in enumerate(valid)
    ]  # fmt: skip
    body = {"name": "browser-stop", "metric": {"name": "accuracy"}, "epochs": epochs}
    run = httpx.post(f"{server}/api/v1/runs", json=body).json()
    assert run["diagnosis"]["signal"] == "valid_loss"
    page.goto(f"{server}/runs/{run['id']}")
    page.wait_for_function("(window.advisorCharts || []).length === 2")
    assert page.inner_text("#stop-epoch").startswith(f"epoch {run['diagnosis']['stop_epoch']} ")
    assert page.inner_text("#onset-epoch") == f"epoch {run['diagnosis']['onset_epoch']}"
    assert page.inner_text("#signal") == "the validation loss"
    green, red = (18, 183, 106), (240, 68, 56)
    assert colour_pixels(page, "#loss-chart", green) > 50
    assert colour_pixels(page, "#loss-chart", red) > 50
    # The marks sit on the chart of the signal that decided, not on the flat metric.
    assert colour_pixels(page, "#metric-chart", green) == 0
    page.screenshot(path=SHOTS / "run-stop-onset.png", full_page=True)
