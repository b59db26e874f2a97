"""Review, models and status pages (each grows into its own module with its area)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session, func, select

from app.config import Settings
from app.models import Image, TrainedModel, Worker
from app.routes.deps import current_user, get_db, get_settings
from app.services import workers
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)


@router.get("/")
def home() -> Response:
    return RedirectResponse("/jobs", status_code=303)


def _count(db: Session, model: type) -> int:
    return db.exec(select(func.count()).select_from(model)).one()


@router.get("/review")
def review_page(request: Request, db: Session = Depends(get_db)) -> Response:
    flagged = db.exec(select(func.count()).select_from(Image).where(Image.flagged)).one()
    return render(request, "review.html", active="review", flagged=flagged)


@router.get("/models")
def models_page(request: Request, db: Session = Depends(get_db)) -> Response:
    return render(request, "models.html", active="models", model_count=_count(db, TrainedModel))


def _worker_rows(db: Session, settings: Settings) -> list[tuple[Worker, workers.Liveness]]:
    return [
        (w, workers.liveness(w, settings.heartbeat_interval, settings.worker_timeout))
        for w in workers.all_workers(db)
    ]


@router.get("/status")
def status_page(
    request: Request, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> Response:
    return render(
        request,
        "status.html",
        active="status",
        workers=_worker_rows(db, settings),
        settings=settings,
    )


@router.get("/status/workers")
def status_workers(
    request: Request, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> Response:
    """The workers table alone, for htmx polling."""
    return render(request, "partials/worker_rows.html", workers=_worker_rows(db, settings))
