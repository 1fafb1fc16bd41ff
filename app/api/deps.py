"""Request dependencies: one database session per request, and the project scope from auth."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.db import Database
from app.services.errors import Unauthorized
from app.services.projects import Scope, project_for_token
from app.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for the request; routers commit explicitly, anything uncommitted rolls back."""
    db: Database = request.app.state.db
    with db.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get("advisor_token")


def get_scope(request: Request, session: SessionDep, settings: SettingsDep) -> Scope:
    if not settings.auth_required:
        default: Scope = request.app.state.default_scope
        return default
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'")
    project = project_for_token(session, token)
    return Scope(project.id, project.name, sees_all=False)


ScopeDep = Annotated[Scope, Depends(get_scope)]
