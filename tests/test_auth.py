"""Sign-in, roles, API tokens and CSRF protection across every route."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from support import PASSWORD, csrf_from, login

from app.config import Settings
from app.main import ROUTERS
from app.models import Role, User
from app.services import auth

# The only things an anonymous visitor may fetch: the login form, liveness, static assets.
PUBLIC = {"/login", "/healthz"}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_but_login_refuses_anonymous(client: TestClient) -> None:
    routes = [
        route
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.path not in PUBLIC
    ]
    assert len(routes) > 10
    for route in routes:
        for method in route.methods - {"HEAD"}:
            response = client.request(method, _concrete(route.path), follow_redirects=False)
            where = f"{method} {route.path}"
            if route.path.startswith("/api/"):
                assert response.status_code == 401, where
            elif method == "GET":
                assert response.status_code == 303, where
                assert response.headers["location"].startswith("/login?next="), where
            else:
                assert response.status_code in (401, 403), where


def test_api_schema_is_served_to_signed_in_users(client: TestClient, make_user: Callable) -> None:
    make_user("ada")
    login(client, "ada", PASSWORD)
    schema = client.get("/api/openapi.json").json()
    assert "/api/jobs" in schema["paths"]
    assert "/jobs/ping" not in schema["paths"]  # HTML routes stay out of the API schema


def test_login_wrong_password_then_right(client: TestClient, make_user: Callable) -> None:
    make_user("ada")
    token = csrf_from(client)
    bad = client.post(
        "/login", data={"username": "ada", "password": "nope-nope", "csrf_token": token}
    )
    assert bad.status_code == 401
    assert "Wrong username or password" in bad.text
    unknown = client.post(
        "/login", data={"username": "nobody", "password": PASSWORD, "csrf_token": token}
    )
    assert unknown.status_code == 401
    assert client.get("/jobs", follow_redirects=False).status_code == 303

    login(client, "ada", PASSWORD)
    page = client.get("/jobs")
    assert page.status_code == 200 and "ada" in page.text


def test_login_without_csrf_token_is_refused(client: TestClient, make_user: Callable) -> None:
    make_user("ada")
    client.get("/login")
    response = client.post("/login", data={"username": "ada", "password": PASSWORD})
    assert response.status_code == 403
    assert "security token" in response.text


def test_state_change_without_csrf_is_refused(client: TestClient, make_user: Callable) -> None:
    make_user("ada")
    token = login(client, "ada", PASSWORD)
    assert client.post("/jobs/ping", follow_redirects=False).status_code == 403
    wrong = client.post("/jobs/ping", headers={"X-CSRF-Token": token + "x"})
    assert wrong.status_code == 403
    assert client.post("/api/jobs", json={"kind": "ping"}).status_code == 403
    assert client.get("/api/jobs").json() == []  # nothing was queued


def test_password_is_stored_as_argon2_hash(db: Session, make_user: Callable) -> None:
    make_user("ada")
    user = db.exec(select(User).where(User.username == "ada")).one()
    assert PASSWORD not in user.password_hash
    assert user.password_hash.startswith("$argon2id$")
    assert auth.verify_password(user.password_hash, PASSWORD)


def test_next_parameter_cannot_redirect_off_site(client: TestClient, make_user: Callable) -> None:
    make_user("ada")
    token = csrf_from(client)
    response = client.post(
        "/login",
        data={"username": "ada", "password": PASSWORD, "csrf_token": token,
              "next": "https://evil.example/"},
        follow_redirects=False,
    )  # fmt: skip
    assert response.headers["location"] == "/jobs"


def test_logout_ends_the_session(client: TestClient, make_user: Callable) -> None:
    make_user("ada")
    token = login(client, "ada", PASSWORD)
    assert (
        client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code
        == 303
    )
    assert client.get("/jobs", follow_redirects=False).status_code == 303


def test_viewer_cannot_queue_jobs(client: TestClient, make_user: Callable) -> None:
    make_user("vic", Role.viewer)
    token = login(client, "vic", PASSWORD)
    response = client.post("/jobs/ping", headers={"X-CSRF-Token": token})
    assert response.status_code == 403
    assert "needs the curator role" in response.text
    assert client.get("/jobs").status_code == 200  # but may look


def test_api_token_auth(client: TestClient, migrated: Settings, db: Session) -> None:
    user = auth.create_user(db, "bot", PASSWORD, Role.viewer)
    token, row = auth.create_api_token(db, user, "ci")
    db.commit()
    assert token not in row.token_hash
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/me", headers=headers).json() == {"username": "bot", "role": "viewer"}
    wrong = {"Authorization": "Bearer sp_not-a-token"}
    assert client.get("/api/me", headers=wrong).status_code == 401
    # Tokens are not ambient credentials, so no CSRF token is needed, but roles still apply.
    assert client.post("/api/jobs", json={"kind": "ping"}, headers=headers).status_code == 403

    from app.models import utcnow

    row.revoked_at = utcnow()
    db.add(row)
    db.commit()
    assert client.get("/api/me", headers=headers).status_code == 401


def test_first_start_creates_one_admin(db: Session) -> None:
    password = auth.ensure_admin(db, None)
    assert password and len(password) >= 12
    admin = db.exec(select(User)).one()
    assert (admin.username, admin.role) == ("admin", Role.admin)
    assert auth.ensure_admin(db, None) is None  # shown once, never again


def test_empty_admin_password_setting_means_generate_one(db: Session) -> None:
    password = auth.ensure_admin(db, "")
    assert password and auth.authenticate(db, "admin", password) is not None


def test_admin_password_from_settings_is_not_echoed(db: Session) -> None:
    assert auth.ensure_admin(db, "from-the-env-123") is None
    assert auth.authenticate(db, "admin", "from-the-env-123") is not None


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [("a", PASSWORD, "2-64 letters"), ("ok_name", "short", "at least 8")],
)
def test_bad_user_details_are_refused(
    db: Session, username: str, password: str, message: str
) -> None:
    with pytest.raises(auth.AuthError, match=message):
        auth.create_user(db, username, password, Role.viewer)


def test_account_page_creates_and_revokes_tokens(client: TestClient, make_user: Callable) -> None:
    make_user("ada")
    csrf = login(client, "ada", PASSWORD)
    page = client.post("/account/tokens", data={"name": "laptop", "csrf_token": csrf})
    token = re.search(r'<code id="new-token">(sp_[^<]+)</code>', page.text)
    assert token, page.text
    bearer = {"Authorization": f"Bearer {token[1]}"}
    assert client.get("/api/me", headers=bearer).json()["username"] == "ada"
    assert token[1] not in client.get("/account").text  # shown once only

    blank = client.post("/account/tokens", data={"name": " ", "csrf_token": csrf})
    assert blank.status_code == 422 and "1-100 characters" in blank.text

    token_id = re.search(r"/account/tokens/(\d+)/revoke", client.get("/account").text)[1]
    client.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    assert client.get("/api/me", headers=bearer).status_code == 401
