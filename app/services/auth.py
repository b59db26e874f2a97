"""Users, passwords, roles and API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, func, select

from app.models import ApiToken, Role, User, utcnow

_hasher = PasswordHasher()
# Verified against when the username is unknown so both paths cost the same time.
_DUMMY_HASH = _hasher.hash("sporeprint-timing-equaliser")

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")
MIN_PASSWORD_LENGTH = 8
TOKEN_PREFIX = "sp_"
_ROLE_RANK = {Role.viewer: 0, Role.curator: 1, Role.admin: 2}


class AuthError(ValueError):
    """A request to change users or tokens that cannot be honoured; the message says why."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def has_role(user: User, needed: Role) -> bool:
    return _ROLE_RANK[Role(user.role)] >= _ROLE_RANK[needed]


def create_user(session: Session, username: str, password: str, role: Role) -> User:
    if not USERNAME_RE.match(username):
        raise AuthError("a username is 2-64 letters, digits, '.', '_' or '-'")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if session.exec(select(User).where(User.username == username)).first():
        raise AuthError(f"user '{username}' already exists")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.is_active:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    session.add(user)
    return user


def ensure_admin(session: Session, password: str | None) -> str | None:
    """Create the first admin when there are no users at all.

    Returns the password when one was generated (to be shown once), else None.
    """
    if session.exec(select(func.count()).select_from(User)).one() > 0:
        return None
    generated = not password
    password = password or secrets.token_urlsafe(12)
    create_user(session, "admin", password, Role.admin)
    return password if generated else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(session: Session, user: User, name: str) -> tuple[str, ApiToken]:
    """A new bearer token; the plain text is returned once and never stored."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise AuthError("a token name is 1-100 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    assert user.id is not None
    row = ApiToken(user_id=user.id, name=name, token_hash=_token_hash(token), prefix=token[:10])
    session.add(row)
    session.flush()
    return token, row


def user_for_token(session: Session, token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == _token_hash(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    row.last_used_at = utcnow()
    session.add(row)
    return user
