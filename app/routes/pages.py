"""The home redirect."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response

from app.routes.deps import current_user

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)


@router.get("/")
def home() -> Response:
    return RedirectResponse("/jobs", status_code=303)
