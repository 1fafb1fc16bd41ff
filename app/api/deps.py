"""Request dependencies: one database session per request, and the project scope from auth.

They are ``async`` on purpose: a sync dependency costs a thread-pool round trip per request,
which under load cost more than the whole request's own work. None of them blocks: the session
connects lazily, inside the (sync) endpoint that uses it, and the token lookup is sent to the
thread pool itself.
"""

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.db import Database
from app.services.errors import Unauthorized
from app.services.projects import Scope, ensure_project, project_for_token
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for the request; routers commit explicitly, anything uncommitted rolls back."""
    db: Database = request.app.state.db
    session = db.sessionmaker()
    try:
        yield session
    finally:
        # Routers commit before returning, so closing only hands the connection back.
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get("advisor_token")


async def get_scope(request: Request, settings: SettingsDep) -> Scope:
    db: Database = request.app.state.db
    if not settings.auth_required:
        default: Scope | None = getattr(request.app.state, "default_scope", None)
        if default is None:
            default = await run_in_threadpool(_default_scope, db, settings.default_project)
            request.app.state.default_scope = default
        return default
    return await token_scope(request)


async def token_scope(request: Request) -> Scope:
    """The project of the request's token (Bearer, or the pages' cookie); 401 without a valid
    one, whatever the auth mode."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'")
    return await run_in_threadpool(_scope_for_token, request.app.state.db, token)


def _default_scope(db: Database, name: str) -> Scope:
    """With auth off every request acts for the default project, created on first use."""
    with db.session() as session:
        project = ensure_project(session, name)
        return Scope(project.id, project.name, sees_all=True)


def _scope_for_token(db: Database, token: str) -> Scope:
    with db.sessionmaker() as session:
        project = project_for_token(session, token)
        return Scope(project.id, project.name, sees_all=False)


ScopeDep = Annotated[Scope, Depends(get_scope)]


async def worker_scope(request: Request, settings: SettingsDep) -> Scope:
    """Whose trials a worker may take: every project's with the fleet's token
    (``ADVISOR_WORKER_TOKEN``), a project's own with that project's token; with auth off and no
    fleet token set, every project's."""
    token = bearer_token(request)
    fleet = settings.worker_token
    if fleet is not None and token is not None and hmac.compare_digest(token, fleet):
        return Scope(0, "", sees_all=True)
    if token is None and not settings.auth_required and settings.worker_token is None:
        return Scope(0, "", sees_all=True)
    return await token_scope(request)


WorkerScopeDep = Annotated[Scope, Depends(worker_scope)]
