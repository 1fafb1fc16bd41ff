"""The ``advisor`` command: serve, migrate, manage projects."""

import logging
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
    if not no_migrate:
        upgrade(settings.database_url)
    logging.basicConfig(level=settings.log_level.upper())
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
