"""Species pages: the list with counts, one species' gallery, one image, the demo offer."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from app.config import Settings
from app.models import Image, Role, Species, User
from app.routes.deps import current_user, get_db, get_settings, require_role
from app.services import auth, catalog, dispatch
from app.services.catalog import ImageState, SpeciesSort
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)

STATE_LABELS = {
    ImageState.all: "All",
    ImageState.downloaded: "Downloaded",
    ImageState.failed: "Failed",
    ImageState.flagged: "Flagged",
    ImageState.kept: "Kept",
    ImageState.excluded: "Excluded",
}


def _fragment_for(request: Request, target: str) -> bool:
    """An htmx request that swaps `#target` only (not a history restore, which wants a page)."""
    headers = request.headers
    return (
        headers.get("hx-request") == "true"
        and headers.get("hx-target") == target
        and headers.get("hx-history-restore-request") != "true"
    )


@router.get("/species")
def species_page(
    request: Request,
    q: str = "",
    sort: SpeciesSort = SpeciesSort.name,
    dir: Literal["asc", "desc"] = "asc",
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    q = q.strip()[:100]
    rows = catalog.species_counts(db, search=q, sort=sort, descending=dir == "desc")
    context = {
        "rows": rows,
        "q": q,
        "sort": sort.value,
        "dir": dir,
        "target": settings.target_images_per_species,
        "limit": catalog.LIST_LIMIT,
    }
    headers = {"Vary": "HX-Request, HX-Target"}
    if _fragment_for(request, "species-table"):
        return render(request, "partials/species_table.html", headers=headers, **context)
    return render(
        request, "species.html", active="species", headers=headers,
        species_total=catalog.species_total(db),
        can_import=auth.has_role(user, Role.curator),
        pending=catalog.pending_downloads(db),
        max_upload_bytes=settings.max_upload_bytes,
        **context,
    )  # fmt: skip


@router.post("/species/demo")
def load_demo(
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """The first-run offer: draw the synthetic dataset and import it, as a job to watch."""
    job = dispatch.submit(db, settings, "demo-data", user_id=user.id)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/species/download")
def download_pending(
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Fetch every pending photo (resumable: a second run takes only what is left)."""
    job = dispatch.submit(db, settings, "download", user_id=user.id)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def _species(db: Session, species_id: int) -> Species:
    species = db.get(Species, species_id)
    if species is None:
        raise HTTPException(404, f"there is no species {species_id}")
    return species


@router.get("/species/{species_id}")
def species_gallery(
    request: Request,
    species_id: int,
    state: ImageState = ImageState.all,
    after: int | None = None,
    before: int | None = None,
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    species = _species(db, species_id)
    page = catalog.gallery_page(db, species_id, state, after=after, before=before)
    (counts,) = catalog.species_counts(db, species_id=species_id)
    context = {
        "species": species,
        "counts": counts,
        "state": state,
        "states": STATE_LABELS,
        "page": page,
        "target": settings.target_images_per_species,
    }
    headers = {"Vary": "HX-Request, HX-Target"}
    if _fragment_for(request, "gallery"):
        return render(request, "partials/gallery.html", headers=headers, **context)
    return render(request, "species_gallery.html", active="species", headers=headers, **context)


@router.get("/images/{image_id}")
def image_page(request: Request, image_id: int, db: Session = Depends(get_db)) -> Response:
    image = db.get(Image, image_id)
    if image is None:
        raise HTTPException(404, f"there is no image {image_id}")
    species = _species(db, image.species_id)
    previous, following = catalog.neighbours(db, image)
    return render(
        request, "image.html", active="species", image=image, species=species,
        previous=previous, following=following,
    )  # fmt: skip
