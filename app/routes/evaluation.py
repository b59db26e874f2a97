"""A trained model's page (its evaluation on the test split) and the button that re-runs it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from app.config import Settings
from app.models import Role, TrainedModel, User
from app.routes.deps import current_user, get_db, get_settings, require_role
from app.services import auth, dispatch
from app.services.jobs import JobError
from app.services.model_report import model_report
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)


@router.get("/models/{model_id}")
def model_page(
    request: Request,
    model_id: int,
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
) -> Response:
    report = model_report(db, model_id)
    if report is None:
        raise HTTPException(404, f"there is no trained model {model_id}")
    return render(
        request, "model.html", active="models", report=report,
        can_evaluate=auth.has_role(user, Role.curator),
    )  # fmt: skip


@router.post("/models/{model_id}/evaluate")
def evaluate_model(
    model_id: int,
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Queue an evaluate job: the model on its test split again (new figures, same model)."""
    if db.get(TrainedModel, model_id) is None:
        raise HTTPException(404, f"there is no trained model {model_id}")
    try:
        job = dispatch.submit(
            db, settings, "evaluate", params={"trained_model_id": model_id}, user_id=user.id
        )
    except JobError as exc:
        raise HTTPException(exc.status_code, str(exc)) from None
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)
