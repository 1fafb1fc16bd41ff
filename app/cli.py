"""The ``advisor`` command: serve, migrate, manage projects."""

import logging
from pathlib import Path
from typing import Annotated

import typer

from app.settings import Settings

app = typer.Typer(
    help="Overfit Advisor: diagnose overfitting runs and walk the remedy ladder.",
    no_args_is_help=True,
)
project_app = typer.Typer(help="Projects and their API tokens.", no_args_is_help=True)
app.add_typer(project_app, name="project")


@app.command()
def migrate() -> None:
    """Upgrade the database (ADVISOR_DATABASE_URL) to the latest schema."""
    from app.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    typer.echo(f"database at head: {_redact(settings.database_url)}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (ADVISOR_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (ADVISOR_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
    no_migrate: Annotated[
        bool, typer.Option(help="Skip the upgrade to the latest schema.")
    ] = False,
) -> None:
    """Migrate the database and start the API."""
    import os

    import uvicorn

    from app.migrate import upgrade

    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    # Worker processes build their own settings from the environment, so pass overrides on.
    for key, value in overrides.items():
        os.environ[f"ADVISOR_{key.upper()}"] = str(value)
    logging.basicConfig(level=settings.log_level.upper())
    if not no_migrate:
        try:
            upgrade(settings.database_url)
        except Exception:  # serve anyway: /readyz says why (a missing or read-only folder, ...)
            logging.getLogger("advisor").exception(
                "could not migrate %s; serving, and /readyz reports it",
                _redact(settings.database_url),
            )
    auth = "required" if settings.auth_required else "off (loopback)"
    typer.echo(
        f"Overfit Advisor on http://{settings.host}:{settings.port}  auth: {auth}  "
        f"database: {_redact(settings.database_url)}"
    )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level=settings.log_level,
        access_log=False,
    )


@app.command()
def worker(
    devices: Annotated[
        str | None,
        typer.Option(
            "--devices",
            "--device",
            help="auto, cpu, cuda or cuda:N; several, comma-separated (cuda:0,cuda:1), to spread "
            "the retrains of jobs that ask for gpus: N over them (ADVISOR_WORKER_DEVICE).",
        ),
    ] = None,
    lease: Annotated[
        float | None, typer.Option(help="Lease seconds (ADVISOR_WORKER_LEASE_S).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="Take trials from this service's worker API (e.g. https://advisor.example) "
            "instead of the database: no database settings or access needed.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=["ADVISOR_WORKER_TOKEN", "ADVISOR_TOKEN"],
            help="With --server: the fleet's worker token, or a project's token (that project's "
            "trials only).",
        ),
    ] = None,
) -> None:
    """Train verification trials until stopped (SIGTERM hands the trial back): from the
    database, or with --server from the service's worker API."""
    import signal

    from pydantic import ValidationError

    from app.worker.worker import Source, Worker

    try:
        settings = Settings(**({"worker_device": devices} if devices else {}))  # type: ignore[arg-type]
    except ValidationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    lease_s = lease or settings.worker_lease_s
    source: Source
    if server is not None:
        from app.worker.remote import RemoteSource

        source = RemoteSource(server, token)
    else:
        from app.db import Database
        from app.worker.local import LocalSource

        source = LocalSource(Database(settings.database_url), lease_s=lease_s)
    w = Worker(
        source,
        devices=settings.worker_devices,
        roots=settings.data_roots,
        lease_s=lease_s,
        poll_s=settings.worker_poll_s if server is None else 5.0,
        threads=settings.worker_threads,
        preload=True,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: w.stop.set())
    w.run()


@app.command()
def train(
    recipe_file: Annotated[Path, typer.Argument(help="A recipe as JSON (see app.builder.recipe).")],
    server: Annotated[
        str, typer.Option(help="The service to report to.")
    ] = "http://127.0.0.1:8000",
    name: Annotated[str, typer.Option(help="The run's name.")] = "",
    seed: int = 0,
    device: str = "auto",
    token: Annotated[str | None, typer.Option(envvar="ADVISOR_TOKEN", help="API token.")] = None,
) -> None:
    """Train a recipe here, report the run to the service, print the diagnosis and remedy."""
    import httpx

    from app.builder.recipe import PRIMARY_METRIC, Recipe
    from app.training.trial import resolve_device, run_trial

    recipe = Recipe.model_validate_json(recipe_file.read_text())
    settings = Settings()
    outcome = run_trial(
        recipe,
        seed,
        devices=(resolve_device(device),),
        roots=settings.data_roots,
        # A line per epoch as it ends; on a terminal the loop also draws a bar per step.
        on_epoch=lambda result: typer.echo(result.summary(recipe.epochs)),
        label=recipe_file.name,
    )
    metric = PRIMARY_METRIC[recipe.task]
    body = {
        "name": name or recipe_file.stem,
        "recipe": recipe.model_dump(mode="json"),
        "metric": {"name": metric, "higher_is_better": True},
        "data": {"n_train": outcome["n_train"], "n_classes": outcome["n_classes"]},
        "epochs": outcome["curve"],
    }
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(f"{server}/api/v1/runs", json=body, headers=headers, timeout=60)
    if response.status_code != 201:
        typer.echo(
            f"the service refused the report ({response.status_code}): {response.text}", err=True
        )
        raise typer.Exit(1)
    run = response.json()
    rec = run["recommendation"]
    typer.echo(f"run {run['id']}: {run['diagnosis']['verdict']} — {run['diagnosis']['summary']}")
    typer.echo(f"next: {rec['rung'] or 'no remedy'} — {rec['action']}")
    for skip in rec["skipped"]:
        typer.echo(f"  skipped {skip['rung']}: {skip['reason']}")


@app.command()
def reassess(
    batch: Annotated[int, typer.Option(help="Runs per transaction.", min=1)] = 500,
) -> None:
    """Diagnose every stored run again with this version's diagnosis and ladder (after an
    upgrade that changed them); prints how many verdicts changed, and how."""
    from collections import Counter

    from rich.progress import Progress
    from sqlalchemy import func, select

    from app.db import Database
    from app.models import Run
    from app.services.runs import reassess_runs

    settings = Settings()
    db = Database(settings.database_url)
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(Run)) or 0
    moved: Counter[tuple[str, str]] = Counter()
    done, last = 0, 0
    with Progress(transient=True) as progress:
        bar = progress.add_task("reassessing runs", total=total)
        while True:
            with db.session() as session:
                after, changes = reassess_runs(
                    session, last, batch, shared_evidence=settings.shared_evidence
                )
            if after == last:
                break
            last = after
            done += len(changes)
            moved.update(c for c in changes if c[0] != c[1])
            progress.update(bar, completed=done)
    typer.echo(f"{done} runs reassessed; {sum(moved.values())} verdicts changed")
    for (old, new), count in sorted(moved.items()):
        typer.echo(f"  {old} -> {new}: {count}")
    db.dispose()


@project_app.command("create")
def project_create(name: str) -> None:
    """Create a project and print its API token (shown once, stored only as a hash)."""
    from app.db import Database
    from app.services.errors import ServiceError
    from app.services.projects import create_project

    db = Database(Settings().database_url)
    try:
        with db.session() as session:
            project, token = create_project(session, name)
    except ServiceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"project '{project.name}' created; its API token (shown only now):")
    typer.echo(token)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    app()
