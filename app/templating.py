"""Jinja2 templates with the context every page needs (user, CSRF token, active nav item)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from app import __version__
from app.paths import resource_dir
from app.routes.deps import csrf_token

templates = Jinja2Templates(directory=str(resource_dir("templates")))
templates.env.globals["app_version"] = __version__


def page_context(request: Request, **context: Any) -> dict[str, Any]:
    # The 500 handler runs outside the session middleware: no session there.
    has_session = "session" in request.scope
    return {
        "user": getattr(request.state, "user", None),
        "csrf_token": csrf_token(request) if has_session else "",
        "active": None,
        **context,
    }


def render(
    request: Request,
    name: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        page_context(request, status_code=status_code, **context),
        status_code=status_code,
        headers=headers,
    )


def render_fragment(name: str, **context: Any) -> str:
    """A partial as a string, for SSE messages."""
    return templates.get_template(name).render(**context)
