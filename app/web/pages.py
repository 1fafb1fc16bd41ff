"""The pages: runs, a run, a verification, the ladder, and the sign-in form when auth is on.

Thin like the API routers: they call the same services and render what those return. Browsing
works without JavaScript; the charts and the live progress use it.
"""

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import model_validator
from sqlalchemy import select

from app.advisor.diagnosis import Verdict
from app.advisor.knobs import NO_WAY
from app.advisor.ladder import RUNGS, RungId
from app.advisor.protocol import metric_value
from app.api.deps import ScopeDep, SessionDep, SettingsDep
from app.api.ladder import ladder_rungs
from app.api.runs import RunId
from app.api.verifications import JobId
from app.models import Run, RungVerdict, Trial, Verification
from app.schemas import RunFilters, Text, VerificationCreate
from app.services import runs as runs_service
from app.services import verifications as verification_service
from app.services.errors import ServiceError, Unauthorized
from app.services.projects import project_for_token
from app.services.trainings import training_of
from app.services.trials import candidates_of, measure_of_job, of_verification, protocol_of

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)
RUNG_IDS = [r.id.value for r in RUNGS]


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


class FormFilters(RunFilters):
    """The run list's filters as the runs page's form sends them: every field, empty ones as ""
    for "any"; the rest is validated as the API's query."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_any(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v != ""} if isinstance(data, dict) else data


@router.get("/", response_class=HTMLResponse)
def runs_page(
    request: Request,
    session: SessionDep,
    scope: ScopeDep,
    filters: Annotated[FormFilters, Query()],
    cursor: Text | None = None,
    order: Literal["newest", "oldest"] = "newest",
) -> HTMLResponse:
    rows, next_cursor = runs_service.list_runs(
        session, scope, filters, cursor=cursor, limit=50, oldest_first=order == "oldest"
    )
    figures = runs_service.figures_by_ids(session, [r["id"] for r in rows])
    runs = [{**runs_service.summary_payload(r), **figures[r["id"]]} for r in rows]
    query = filters.model_dump(mode="json", exclude_none=True)
    if order != "newest":
        query["order"] = order
    next_url = "/?" + urlencode({**query, "cursor": next_cursor}) if next_cursor else None
    return render(request, "runs.html", runs=runs, filters=filters, order=order,
                  next_cursor=next_cursor, next_url=next_url, verdicts=[v.value for v in Verdict],
                  rungs=RUNG_IDS)  # fmt: skip


def evaluation_steps(epochs: list[dict[str, Any]]) -> dict[float, int] | None:
    """The step of each evaluation, by its epoch, when every evaluation carries one (a run
    evaluated every so many steps: its pages speak of steps); else None."""
    steps = {e["epoch"]: e["step"] for e in epochs if e.get("step") is not None}
    return steps if epochs and len(steps) == len(epochs) else None


def chart_data(run: dict[str, Any], steps: dict[float, int] | None) -> dict[str, Any]:
    """The charts' data: along the epochs, or along the steps of a step-based run (``steps``,
    from :func:`evaluation_steps`), the marks placed on the same axis."""
    epochs = run["epochs"]
    metric = run["metric"]["name"] if run["metric"] else None
    diagnosis = run["diagnosis"]
    evidence = diagnosis["evidence"]
    stop = diagnosis.get("stop_epoch")
    # Diagnoses stored before stop epochs existed (null here) mark the criterion's best.
    marks = {
        "stop_epoch": stop if stop is not None else evidence.get("best_epoch"),
        "onset_epoch": diagnosis.get("onset_epoch"),
        "last_epoch": evidence.get("last_epoch"),
    }
    if steps is not None:
        marks = {k: steps.get(v) if v is not None else None for k, v in marks.items()}
    return {
        "x": [e["step"] if steps is not None else e["epoch"] for e in epochs],
        "x_label": "step" if steps is not None else "epoch",
        "train_loss": [e["train_loss"] for e in epochs],
        "valid_loss": [e["valid_loss"] for e in epochs],
        "metric": metric,
        "metric_values": [e["metrics"].get(metric) for e in epochs] if metric else None,
        **marks,
        "overfitting": run["verdict"] == "overfitting",
        # The chart that shows the signal that decided carries the marks.
        "signal": diagnosis.get("signal"),
    }


def current_recommendation(
    session: SessionDep, row: dict[str, Any], shared_evidence: bool
) -> dict[str, Any]:
    """The run's recommendation as it stands now: its lineage's and similar runs' verdicts are
    read at render time (a verification finished since the report counts). A run whose stored
    verdict an older detector gave keeps its stored recommendation, to match its diagnosis."""
    # The stored diagnosis is this run's last look: the verdict is read again as it was answered.
    now = runs_service.current_assessment(
        session, row, shared=shared_evidence, previous=row["diagnosis"]
    )
    recommendation: dict[str, Any] = (
        now["recommendation"] if now["verdict"] == row["verdict"] else row["recommendation"]
    )
    return recommendation


def ladder_view(
    session: SessionDep, run: dict[str, Any], recommendation: dict[str, Any]
) -> list[dict[str, Any]]:
    """The recommendation's seven steps in its order (a demoted rung after the rung it now
    follows), each with this run's own verification verdicts and its record on similar runs."""
    verdicts: dict[str, list[str]] = {}
    for rung, verdict in session.execute(
        select(RungVerdict.rung, RungVerdict.verdict)
        .where(RungVerdict.run_id == run["id"])
        .order_by(RungVerdict.created_at, RungVerdict.id)
    ):
        verdicts.setdefault(rung, []).append(verdict)
    steps = recommendation.get("ladder") or [
        {"rung": r, "status": "open", "reason": ""} for r in RUNG_IDS
    ]
    return [
        {
            "rung": step["rung"],
            "status": "applied" if run["applied_rung"] == step["rung"] else step["status"],
            "reason": step["reason"],
            "verdicts": verdicts.get(step["rung"], []),
            "evidence": step.get("evidence"),
            "verify_hint": step.get("verify_hint"),
        }
        for step in steps
    ]


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    run_id: RunId,
    session: SessionDep,
    scope: ScopeDep,
    settings: SettingsDep,
    error: str | None = None,
) -> HTMLResponse:
    row = runs_service.get_run(session, scope, run_id)
    run = runs_service.run_payload(row)
    run["recommendation"] = current_recommendation(session, row, settings.shared_evidence)
    # Diagnoses stored before the diagnosis named its stop and onset epochs lack them.
    run["diagnosis"] = {"stop_epoch": None, "onset_epoch": None, "signal": None,
                        **run["diagnosis"]}  # fmt: skip
    parent = runs_service.summaries_by_ids(session, [row["parent_id"]]) if row["parent_id"] else []
    children = session.execute(
        select(Run.id, Run.name).where(Run.parent_id == run_id).order_by(Run.id)
    ).all()
    jobs = session.scalars(
        select(Verification).where(Verification.run_id == run_id).order_by(Verification.id)
    ).all()
    steps = evaluation_steps(run["epochs"])
    how, _ = runs_service.how_verified(row)
    ladder = ladder_view(session, run, run["recommendation"])
    settings_of = (run["trainer"] or {}).get("settings") or {}
    return render(
        request, "run.html", status_code=422 if error else 200, run=run, error=error,
        how=how, no_way=NO_WAY,
        # The rungs a verification can try here; a recommendation stored before it said so lists
        # them all, as before.
        verify_rungs=[s["rung"] for s in ladder if s["status"] != "skipped"
                      and not s["verify_hint"]] if "verifiable" in run["recommendation"]
        else RUNG_IDS,
        default_epochs=(run["recipe"] or {}).get("epochs") or settings_of.get("epochs")
        or run["n_epochs"],
        steps=steps, chart=chart_data(run, steps),
        metric_name=run["metric"]["name"] if run["metric"] else None,
        has_lr=any(e.get("lr") is not None for e in run["epochs"]),
        ladder=ladder,
        parent=parent[0] if parent else None, children=children, verifications=jobs, rungs=RUNG_IDS,
        races={job.id: list(candidates_of(job)) for job in jobs
               if protocol_of(job)["race"]},
    )  # fmt: skip


@router.post("/runs/{run_id}/verify", response_model=None)
def verify_from_page(
    request: Request,
    run_id: RunId,
    session: SessionDep,
    scope: ScopeDep,
    settings: SettingsDep,
    rung: Annotated[RungId | None, Form()] = None,
    seeds: Annotated[int, Form(ge=1, le=20)] = 5,
    epochs: Annotated[int | None, Form(ge=1, le=10_000)] = None,
    criterion: Annotated[Literal["best", "final"], Form()] = "best",
    race: Annotated[int | None, Form(ge=2, le=7)] = None,
) -> Response:
    row = runs_service.get_run(session, scope, run_id)
    try:
        if race is not None:  # the race button: the rung picked above does not apply
            body = VerificationCreate(race=race, seeds=seeds, epochs=epochs, criterion=criterion)
        else:
            body = VerificationCreate(rung=rung, seeds=seeds, epochs=epochs, criterion=criterion)
        job = verification_service.request(session, row, body, settings.data_roots)
    except ServiceError as exc:
        session.rollback()
        return run_page(request, run_id, session, scope, settings, error=exc.message)
    session.commit()
    return RedirectResponse(f"/verifications/{job.id}", status_code=303)


def overlay_curves(session: SessionDep, job: Verification) -> list[dict[str, Any]]:
    """Per seed used, the validation metric epoch by epoch of the baseline and of each
    candidate (a candidate stopped in a race ends where it stopped)."""
    result = job.result
    if not result or "fractions" in result:
        return []
    metric = result["metric"]
    baseline = training_of(job.budget["baseline_recipe"])
    stops = (result.get("race") or {}).get("checkpoints", [])
    lines: dict[str, list[str]] = {"baseline": [baseline.fingerprint()]}
    for rung, recipe in candidates_of(job).items():
        candidate = training_of(recipe)
        lines[rung] = [candidate.fingerprint(), *(candidate.fingerprint(s) for s in stops)]
    seeds = sorted({s["seed"] for s in result["per_seed"]}, key=job.seeds.index)
    prints = [p for ps in lines.values() for p in ps]
    trials = session.scalars(
        select(Trial).where(Trial.recipe_fingerprint.in_(prints), Trial.seed.in_(seeds))
    ).all()
    by_key = {(t.recipe_fingerprint, t.seed): t.curve for t in trials}
    curves = []
    for seed in seeds:
        series: list[dict[str, Any]] = []
        for label, ps in lines.items():
            curve = next((by_key[(p, seed)] for p in ps if (p, seed) in by_key), None)
            if curve:
                values: list[float | None] = [metric_value(e, metric) for e in curve]
                series.append({"label": label, "values": values})
        if len(series) > 1:
            n = max(len(x["values"]) for x in series)
            for x in series:  # a stopped candidate's line ends where it stopped
                x["values"] += [None] * (n - len(x["values"]))
            curves.append({"seed": seed, "epochs": list(range(n)), "series": series})
    return curves


def _value(record: dict[str, Any], metric: str) -> float | None:
    """A record's ``metric``, or None where a running trial's record lacks it."""
    try:
        return metric_value(record, metric)
    except (KeyError, TypeError):
        return None


def trial_charts(trials: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Each trial's validation metric epoch by epoch, for its small chart (the page's script
    redraws it from the trials API while the trial runs)."""
    return [
        {"id": t["id"], "epochs": [e["epoch"] for e in t["curve"]],
         "values": [_value(e, metric) for e in t["curve"]]}
        for t in trials
    ]  # fmt: skip


MEANING = {"confirmed": "helps", "refuted": "does not help", "inconclusive": "may or may not help"}


def verdict_sentence(result: dict[str, Any], rung: str) -> str:
    effect, verdict = result["effect"], result["verdict"]
    if "fractions" in result:
        return (
            f"A learning curve over {', '.join(result['fractions'])} of the training set "
            f"predicts {result['predicted_metric_with_2x_data']:.4f} {result['metric']} with "
            f"twice the data ({effect:+.4f}): more data is {verdict}."
        )
    criterion = result.get("criterion_text") or result.get("criterion", "")
    if "race" in result:
        winner = result["race"]["winner"]
        change = f"{effect:+.4f}" if effect is not None else "no full comparison"
        return (
            f"{winner} ranks first of {len(result['rungs'])} raced rungs: {MEANING[verdict]} "
            f"({verdict}; the {criterion} changed by {change} against the shared baseline)."
        )
    return (
        f"{rung} {MEANING[verdict]}: the {criterion} changed by {effect:+.4f} on average over "
        f"{len(result['differences'])} paired seeds ({verdict}: {result.get('reason', '')})."
    ).replace(": )", ")")


@router.get("/verifications/{job_id}", response_class=HTMLResponse)
def verification_page(
    request: Request, job_id: JobId, session: SessionDep, scope: ScopeDep
) -> HTMLResponse:
    job = verification_service.get(session, scope, job_id)
    result = job.result
    pairs = []
    if result and "fractions" not in result and "race" not in result:
        by_role: dict[tuple[str, int], dict[str, Any]] = {
            (s["role"], s["seed"]): s for s in result["per_seed"]
        }
        seeds = [seed for seed in job.seeds if ("candidate", seed) in by_role]
        pairs = [
            {"seed": seed, "baseline": by_role[("baseline", seed)],
             "candidate": by_role[("candidate", seed)], "difference": diff}
            for seed, diff in zip(seeds, result["differences"], strict=True)
        ]  # fmt: skip
    trials = of_verification(session, job)
    metric = result["metric"] if result else measure_of_job(job).name
    return render(
        request, "verification.html", job=job, result=result, pairs=pairs,
        curves=overlay_curves(session, job), trials=trials, metric=metric,
        trial_charts={"metric": metric, "trials": trial_charts(trials, metric)},
        protocol=protocol_of(job),
        verification_rungs=list(candidates_of(job)) or [job.rung],
        sentence=verdict_sentence(result, job.rung) if result else None,
    )  # fmt: skip


@router.post("/verifications/{job_id}/cancel")
def cancel_from_page(job_id: JobId, session: SessionDep, scope: ScopeDep) -> RedirectResponse:
    job = verification_service.get(session, scope, job_id)
    if not job.status.finished:
        verification_service.cancel(session, scope, job_id)
        session.commit()
    return RedirectResponse(f"/verifications/{job_id}", status_code=303)


@router.get("/ladder", response_class=HTMLResponse)
def ladder_page(request: Request) -> HTMLResponse:
    return render(request, "ladder.html", rungs=ladder_rungs())


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", next=next)


@router.post("/login", response_model=None)
def login(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        project_for_token(session, token)
    except Unauthorized:
        return render(request, "login.html", status_code=401, next=next, error="Unknown token.")
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie("advisor_token", token, httponly=True, samesite="lax")
    return response
