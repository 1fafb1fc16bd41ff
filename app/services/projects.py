"""Projects and their API tokens. Only a token's SHA-256 is stored; the token is shown once."""

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import ApiToken, Project
from app.services.errors import Conflict, Invalid, Unauthorized

TOKEN_PREFIX = "oa_"


@dataclass(frozen=True, slots=True)
class Scope:
    """Which project a request acts for, and whether it may see the others (auth off)."""

    project_id: int
    project_name: str
    sees_all: bool

    def visible(self, project_id: int) -> bool:
        return self.sees_all or project_id == self.project_id


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_project(session: Session, name: str) -> tuple[Project, str]:
    """Create a project with a fresh token; returns the token, which is never stored."""
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"project '{name}' already exists", field="name")
    project = Project(name=name)
    session.add(project)
    session.flush()
    return project, issue_token(session, project)


def issue_token(session: Session, project: Project) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(project_id=project.id, token_hash=hash_token(token), prefix=token[:12]))
    session.flush()
    return token


def ensure_project(session: Session, name: str) -> Project:
    """Get or create ``name``; safe when several processes start at once."""
    project = session.scalar(select(Project).where(Project.name == name))
    if project is not None:
        return project
    try:
        with session.begin_nested():
            project = Project(name=name)
            session.add(project)
    except IntegrityError:
        project = session.scalars(select(Project).where(Project.name == name)).one()
    return project


def project_by_name(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise Invalid(f"unknown project '{name}'", field="project")
    return project


def project_for_token(session: Session, token: str) -> Project:
    row = session.execute(
        select(Project)
        .join(ApiToken, ApiToken.project_id == Project.id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    if row is None:
        raise Unauthorized("invalid or revoked API token")
    return row
