"""Request dependencies: settings, database session, the signed-in user, CSRF, roles."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

from fastapi import Depends, Request
from sqlmodel import Session

from app.config import Settings
from app.db import get_engine
from app.models import Role, User
from app.services import auth

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


class NotAuthenticated(Exception):
    """No valid session or token; HTML requests go to the login page, API requests get 401."""


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(settings: Settings = Depends(get_settings)) -> Iterator[Session]:
    with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        yield session


def csrf_token(request: Request) -> str:
    """This session's CSRF token, created on first use."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def check_csrf(request: Request) -> None:
    """Unsafe requests made with the session cookie must echo the session's token."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()  # Starlette caches it for the route
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not secrets.compare_digest(expected, sent):
        raise Forbidden("the form's security token is missing or stale; reload the page and retry")


async def current_user(request: Request, db: Session = Depends(get_db)) -> User:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        user = auth.user_for_token(db, header[7:].strip())
        if user is None:
            raise NotAuthenticated
        db.commit()  # last_used_at
        # A bearer token is not sent automatically by browsers, so no CSRF check is needed.
        request.state.user = user
        return user
    user_id = request.session.get("user_id")
    user = db.get(User, user_id) if isinstance(user_id, int) else None
    if user is None or not user.is_active:
        request.session.pop("user_id", None)
        raise NotAuthenticated
    await check_csrf(request)
    request.state.user = user
    return user


def require_role(role: Role) -> Callable[..., User]:
    def dependency(user: User = Depends(current_user)) -> User:
        if not auth.has_role(user, role):
            raise Forbidden(f"this needs the {role} role; you are signed in as {user.role}")
        return user

    return dependency


def last_event_id(request: Request, after: int) -> int:
    """Where an SSE stream resumes: the browser's Last-Event-ID on reconnect, else the page's
    own mark."""
    header = request.headers.get("last-event-id", "")
    return int(header) if header.isdigit() else after
