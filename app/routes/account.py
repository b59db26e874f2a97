"""The signed-in user's own page: who they are and their API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session, col, select

from app.models import ApiToken, User, utcnow
from app.routes.deps import current_user, get_db
from app.services import auth
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)


def _tokens(db: Session, user: User) -> list[ApiToken]:
    query = select(ApiToken).where(ApiToken.user_id == user.id, col(ApiToken.revoked_at).is_(None))
    return list(db.exec(query.order_by(col(ApiToken.id).desc())).all())


@router.get("/account")
def account_page(
    request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)
) -> Response:
    return render(request, "account.html", tokens=_tokens(db, user), new_token=None, error=None)


@router.post("/account/tokens")
def create_token(
    request: Request,
    name: str = Form(""),
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
) -> Response:
    try:
        token, _ = auth.create_api_token(db, user, name)
    except auth.AuthError as exc:
        return render(
            request, "account.html", status_code=422, tokens=_tokens(db, user), new_token=None,
            error=str(exc),
        )  # fmt: skip
    db.commit()
    # Shown on this response only; the database keeps just its hash.
    return render(request, "account.html", tokens=_tokens(db, user), new_token=token, error=None)


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(
    token_id: int, user: User = Depends(current_user), db: Session = Depends(get_db)
) -> Response:
    row = db.get(ApiToken, token_id)
    if row is not None and row.user_id == user.id and row.revoked_at is None:
        row.revoked_at = utcnow()
        db.add(row)
        db.commit()
    return RedirectResponse("/account", status_code=303)
