"""The home redirect and the models page (which grows into its own module with its area)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session, col, select

from app.models import DatasetVersion, TrainedModel
from app.routes.deps import current_user, get_db
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)


@router.get("/")
def home() -> Response:
    return RedirectResponse("/jobs", status_code=303)


@router.get("/models")
def models_page(request: Request, db: Session = Depends(get_db)) -> Response:
    models = db.exec(select(TrainedModel).order_by(col(TrainedModel.id).desc())).all()
    versions = dict(db.exec(select(DatasetVersion.id, DatasetVersion.name)).all())
    return render(request, "models.html", active="models", models=models, versions=versions)
