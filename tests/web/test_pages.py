"""Every page, server-side, on SQLite and PostgreSQL: content, filters, 404s and auth."""

import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from app.db import Database
from app.services.projects import create_project
from tests.api.test_runs import post, step_evaluations
from tests.conftest import healthy_epochs, make_client, overfit_epochs
from tests.worker.test_verification_api import RECIPE


def test_a_run_evaluated_by_steps_is_told_in_steps(client: TestClient) -> None:
    """Evaluations every 40 steps: the page speaks of evaluations and steps (the stop and the
    onset at their steps, the chart along the steps), lists each step, epoch and learning
    rate; a run by epochs keeps speaking of epochs, with no step or learning-rate column."""
    run = post(client, name="by-steps", epochs=step_evaluations())
    d = run["diagnosis"]
    step_of = {e["epoch"]: e["step"] for e in run["epochs"]}
    stop, onset = step_of[d["stop_epoch"]], step_of[d["onset_epoch"]]
    text = client.get(f"/runs/{run['id']}").text
    assert "20 evaluations" in text and "Loss per evaluation, by step" in text
    assert f'id="stop-epoch">step {stop} (epoch {d["stop_epoch"]}) (keep these weights)' in text
    assert f'id="onset-epoch">step {onset}' in text
    assert '"x_label": "step"' in text and f'"stop_epoch": {stop}' in text
    assert "<h2>Evaluations</h2>" in text and "<th>Step</th>" in text
    assert "<th>Learning rate</th>" in text and "<td>40</td><td>0.4</td>" in text
    plain = client.get(f"/runs/{post(client, name='by-epochs')['id']}").text
    assert "20 epochs" in plain and "Loss per epoch" in plain and '"x_label": "epoch"' in plain
    assert "<th>Step</th>" not in plain and "<th>Learning rate</th>" not in plain


def test_runs_page_lists_and_filters(client: TestClient) -> None:
    over = post(client, name="alpha-overfit")
    fine = post(client, name="beta-healthy", epochs=healthy_epochs())
    page = client.get("/")
    assert page.status_code == 200
    assert "alpha-overfit" in page.text and "beta-healthy" in page.text
    assert f'href="/runs/{over["id"]}"' in page.text
    filtered = client.get("/", params={"verdict": "healthy"}).text
    assert "beta-healthy" in filtered and "alpha-overfit" not in filtered
    by_name = client.get("/", params={"name": "ALPHA"}).text
    assert "alpha-overfit" in by_name and "beta-healthy" not in by_name
    assert "No runs match" in client.get("/", params={"rung": "mixup"}).text
    assert fine["id"] > over["id"]


def test_runs_page_paginates(client: TestClient) -> None:
    for i in range(53):
        post(client, name=f"run-{i:02d}", epochs=overfit_epochs(4))
    first = client.get("/").text
    assert "run-52" in first and "run-02" not in first
    older = re.search(r'href="(/\?cursor=[^"]+)"', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert "run-02" in second and "run-52" not in second


def test_run_page_shows_curves_diagnosis_ladder_lineage_and_recipe(client: TestClient) -> None:
    parent = post(client, name="parent", recipe=RECIPE)
    child = post(client, name="child", parent_id=parent["id"], recipe=RECIPE)
    page = client.get(f"/runs/{parent['id']}")
    assert page.status_code == 200
    text = page.text
    assert 'id="loss-chart"' in text and 'id="run-data"' in text
    assert '"train_loss": [' in text and '"stop_epoch": 6' in text and '"onset_epoch": 8' in text
    assert 'id="stop-epoch">epoch 6 (keep these weights)' in text
    assert 'id="onset-epoch">epoch 8' in text and 'id="signal">the validation loss' in text
    assert 'class="signal valid_loss"' in text
    assert parent["diagnosis"]["summary"].split(":")[0] in text
    for rung in ("more_data", "augment", "mixup", "batchnorm", "dropout_head", "dropout_body",
                 "smaller_model"):  # fmt: skip
        assert rung in text
    assert "recommended" in text and "Verify this remedy" in text
    assert '"arch": "simple_cnn_small"' in text
    assert f'href="/runs/{child["id"]}"' in text
    child_page = client.get(f"/runs/{child['id']}").text
    assert f'href="/runs/{parent["id"]}"' in child_page
    assert "applied" in child_page
    no_recipe = post(client, name="plain")
    plain = client.get(f"/runs/{no_recipe['id']}").text
    # No form, but what would make the run verifiable.
    assert 'class="verify"' not in plain
    assert "Not verifiable:" in plain and "overfit-advisor agent" in plain


def test_a_script_run_offers_the_rungs_its_knobs_can_verify(client: TestClient) -> None:
    trainer = {"settings": {"augment": "none", "head_dropout": 0.0, "epochs": 12},
               "knobs": ["augment", "head_dropout"]}  # fmt: skip
    run = post(client, name="mine", trainer=trainer, data={"more_data_available": False})
    text = client.get(f"/runs/{run['id']}").text
    assert "overfit-advisor agent --project default -- python train.py" in text
    form = text[text.index('class="verify"') : text.index("</form>")]
    options = re.findall(r'<option value="(\w+)"', form.split("Seeds")[0])
    assert options == ["augment", "dropout_head"]
    assert 'name="epochs" min="1" max="10000" value="12"' in form
    assert "Not verifiable here: declare the &#39;mixup&#39; knob" in text
    assert "Script settings" in text
    r = client.post(f"/runs/{run['id']}/verify", data={"rung": "dropout_head", "seeds": "2"},
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    job = client.get(r.headers["location"].replace("/verifications", "/api/v1/verifications"))
    assert job.json()["candidate_recipe"]["settings"]["head_dropout"] == 0.25


def test_verify_form_starts_a_verification(client: TestClient) -> None:
    run = post(client, recipe=RECIPE)
    r = client.post(f"/runs/{run['id']}/verify", data={"rung": "dropout_head", "seeds": "2"},
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    assert page.status_code == 200
    assert "dropout_head" in page.text and 'id="live"' in page.text
    refused = client.post(f"/runs/{run['id']}/verify", data={"rung": "smaller_model"})
    assert refused.status_code == 422
    assert "smallest of its family" in refused.text
    job_id = int(r.headers["location"].rsplit("/", 1)[1])
    cancel = client.post(f"/verifications/{job_id}/cancel", follow_redirects=False)
    assert cancel.status_code == 303
    assert "cancelled" in client.get(f"/verifications/{job_id}").text


def test_race_button_queues_a_race_of_the_next_open_rungs(client: TestClient) -> None:
    run = post(client, recipe=RECIPE)
    r = client.post(f"/runs/{run['id']}/verify",
                    data={"rung": "dropout_head", "seeds": "2", "race": "3", "criterion": "final"},
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    job = client.get(f"/api/v1/verifications/{r.headers['location'].rsplit('/', 1)[1]}").json()
    assert job["protocol"]["race"] and job["protocol"]["criterion"] == "final"
    assert len(job["rungs"]) == 3 and job["seeds"] == [0, 1]
    page = client.get(r.headers["location"]).text
    assert f"race of {', '.join(job['rungs'])}" in page and "judged on the final epoch" in page
    assert f"race of {', '.join(job['rungs'])}" in client.get(f"/runs/{run['id']}").text


def test_pages_refuse_ids_beyond_the_column_and_nul_in_filters(client: TestClient) -> None:
    """Answered as 4xx naming the field, never a 500, on both backends."""
    for path in ("/runs/2147483648", "/runs/9223372036854775808", "/verifications/2147483648",
                 "/runs/0"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 422, (path, r.text)
        assert "_id" in r.json()["message"]
    r = client.post("/verifications/2147483648/cancel")
    assert r.status_code == 422
    for query in ({"name": "a\x00b"}, {"project": "a\x00b"}, {"cursor": "\x00"}):
        r = client.get("/", params=query)
        assert r.status_code == 422, (query, r.text)
        assert next(iter(query)) in r.json()["message"]
    assert client.get("/", params={"cursor": "OTk5OTk5OTk5OTk5"}).status_code == 422


def test_runs_page_validates_its_filters_as_the_api_does(client: TestClient) -> None:
    post(client, name="dated")
    for query in ({"verdict": "great"}, {"name": "n" * 201}, {"created_after": "yesterday"},
                  {"tag": "a\nb"}):  # fmt: skip
        page, api = client.get("/", params=query), client.get("/api/v1/runs", params=query)
        assert page.status_code == api.status_code == 422, (query, page.text)
        assert page.json()["message"] == api.json()["message"]
        assert page.json()["message"].startswith(f"{next(iter(query))}: ")
    # A date without a timezone is read as UTC, as on the API.
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert "dated" in client.get("/", params={"created_after": hour_ago}).text
    assert "No runs match" in client.get("/", params={"created_before": hour_ago}).text


def test_ladder_page_and_404s(client: TestClient) -> None:
    ladder = client.get("/ladder").text
    assert ladder.index("more_data") < ladder.index("augment") < ladder.index("smaller_model")
    for path in ("/runs/424242", "/verifications/424242"):
        r = client.get(path)
        assert r.status_code == 404
        assert "Not found" in r.text
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200


def test_pages_follow_the_api_auth_rules(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as session:
        alice = create_project(session, "alice")[1]
        bob = create_project(session, "bob")[1]
    db.dispose()
    with make_client(db_url, auth="required") as client:
        r = client.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert client.get("/ladder").status_code == 200
        assert client.post("/login", data={"token": "oa_nope"}).status_code == 401
        run = client.post("/api/v1/runs", json={"name": "alice-run", "epochs": overfit_epochs()},
                          headers={"Authorization": f"Bearer {alice}"}).json()  # fmt: skip
        login = client.post("/login", data={"token": alice, "next": "/"}, follow_redirects=False)
        assert login.status_code == 303
        assert "alice-run" in client.get("/").text
        assert client.get(f"/runs/{run['id']}").status_code == 200
        client.post("/login", data={"token": bob})
        assert "alice-run" not in client.get("/").text
        assert client.get(f"/runs/{run['id']}").status_code == 404


def test_runs_page_sorts_by_date(client: TestClient) -> None:
    for i in range(3):
        post(client, name=f"sorted-{i}", epochs=overfit_epochs(4))
    newest = client.get("/").text
    oldest = client.get("/", params={"order": "oldest"}).text
    assert newest.index("sorted-2") < newest.index("sorted-0")
    assert oldest.index("sorted-0") < oldest.index("sorted-2")
    api = client.get("/api/v1/runs", params={"order": "oldest", "limit": 2}).json()
    assert [r["name"] for r in api["items"]] == ["sorted-0", "sorted-1"]
    rest = client.get("/api/v1/runs", params={"order": "oldest", "cursor": api["next_cursor"]})
    assert [r["name"] for r in rest.json()["items"]] == ["sorted-2"]


def test_run_page_shows_params_and_tags(client: TestClient) -> None:
    run = post(client, name="tagged", params={"lr": 0.003, "optimizer": "adamw", "fp16": True,
               "note": "<b>bold</b>"}, tags=["pets", "a b&c"])  # fmt: skip
    text = client.get(f"/runs/{run['id']}").text
    assert 'id="tags"' in text and 'id="params"' in text
    assert '<a class="badge tag" href="/?tag=pets">pets</a>' in text
    assert '<a class="badge tag" href="/?tag=a+b%26c">a b&amp;c</a>' in text
    assert "<td>lr</td><td>0.003</td>" in text
    assert "<td>optimizer</td><td>adamw</td>" in text
    assert "<td>fp16</td><td>true</td>" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold</b>" not in text
    plain = post(client, name="plain")
    plain_text = client.get(f"/runs/{plain['id']}").text
    assert 'id="tags"' not in plain_text and 'id="params"' not in plain_text


def test_runs_page_shows_and_filters_tags(client: TestClient) -> None:
    post(client, name="alpha-tagged", tags=["sweep-1", "pets"])
    post(client, name="beta-untagged")
    page = client.get("/").text
    assert 'class="badge tag"' in page and "sweep-1" in page
    assert 'name="tag"' in page
    filtered = client.get("/", params={"tag": "sweep-1"}).text
    assert "alpha-tagged" in filtered and "beta-untagged" not in filtered
    assert 'value="sweep-1"' in filtered
    # The form sends an empty tag for "any".
    both = client.get("/", params={"tag": "", "verdict": ""}).text
    assert "alpha-tagged" in both and "beta-untagged" in both
    assert "No runs match" in client.get("/", params={"tag": "sweep"}).text
    assert client.get("/", params={"tag": "t" * 65}).status_code == 422


def test_runs_page_tag_filter_survives_pagination(client: TestClient) -> None:
    for i in range(53):
        post(client, name=f"run-{i:02d}", epochs=overfit_epochs(4), tags=["many"])
    post(client, name="other", epochs=overfit_epochs(4))
    first = client.get("/", params={"tag": "many"}).text
    assert "run-52" in first and "other" not in first
    older = re.search(r'href="(/\?[^"]*cursor=[^"]+)"', first)
    assert older is not None
    url = older.group(1).replace("&amp;", "&")
    assert "tag=many" in url
    second = client.get(url).text
    assert "run-02" in second and "run-52" not in second and "other" not in second
