"""Photo and thumbnail files, found by image id in the database (never by a path from the URL)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse
from sqlmodel import Session

from app.config import Settings
from app.models import Image
from app.routes.deps import current_user, get_db, get_settings
from app.services import media

router = APIRouter(prefix="/media", dependencies=[Depends(current_user)], include_in_schema=False)


def _serve(found: media.MediaFile) -> FileResponse:
    headers = {"Cache-Control": found.cache_control, "X-Content-Type-Options": "nosniff"}
    if found.etag:
        headers["ETag"] = found.etag
    return FileResponse(found.path, media_type=found.content_type, headers=headers)


@router.get("/images/{image_id}")
def image_file(
    image_id: int, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> FileResponse:
    try:
        return _serve(media.original(db.get(Image, image_id), settings.data_dir))
    except media.MediaNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/thumbs/{image_id}")
def thumbnail_file(
    image_id: int, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> FileResponse:
    try:
        return _serve(media.thumbnail(db.get(Image, image_id), settings.data_dir))
    except media.MediaNotFound as exc:
        raise HTTPException(404, str(exc)) from None
