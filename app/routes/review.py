"""The review queue: flagged photos first, keep / exclude / undo by click or keyboard, in bulk."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from app.config import Settings
from app.models import ReviewState, Role, Species, User
from app.routes.deps import current_user, get_db, get_settings, require_role
from app.services import auth, curation_view, dbscan_plot, dispatch, review
from app.services.review import Decision, QueueView, ReviewError
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)

VIEW_LABELS = {
    QueueView.pending: "To review",
    QueueView.kept: "Kept",
    QueueView.excluded: "Excluded",
}
DONE = {
    Decision.keep: "Kept",
    Decision.exclude: "Excluded",
    Decision.undo: "Undid the last decision on",
}


def _htmx_target(request: Request) -> str | None:
    headers = request.headers
    if headers.get("hx-request") != "true" or headers.get("hx-history-restore-request") == "true":
        return None
    return headers.get("hx-target")


def _refused(db: Session, user: User, exc: ReviewError) -> HTTPException:
    """The HTTP error for a refused decision; the rollback expired the signed-in user, whom the
    error page shows, so load it again while the session is open."""
    db.refresh(user)
    return HTTPException(exc.status_code, str(exc))


def _species(db: Session, species_id: int) -> Species:
    species = db.get(Species, species_id)
    if species is None:
        raise HTTPException(404, f"there is no species {species_id}")
    return species


def _base(species_id: int | None) -> str:
    return "/review" if species_id is None else f"/review/species/{species_id}"


def _context(
    db: Session, user: User, species_id: int | None, view: QueueView, after: str | None = None
) -> dict:
    try:
        page = review.queue_page(db, species_id=species_id, view=view, after=after)
    except ReviewError as exc:
        raise HTTPException(exc.status_code, str(exc)) from None
    return {
        **_counts(db, species_id, view),
        "oob": False,  # the full page draws the counts in place
        "page": page,
        "can_review": auth.has_role(user, Role.curator),
    }


def _queue_response(
    request: Request, db: Session, user: User, species_id: int | None, view: QueueView
) -> Response:
    context = _context(db, user, species_id, view)
    headers = {"Vary": "HX-Request, HX-Target"}
    if _htmx_target(request) == "review-queue":
        return render(
            request, "partials/review_queue.html", headers=headers, oob_counts=True, **context
        )
    species = _species(db, species_id) if species_id is not None else None
    picture = dbscan_plot.picture(db, species_id) if species_id is not None else None
    curation = curation_view.latest(db) if species_id is None else None
    return render(
        request, "review.html", active="review", headers=headers,
        species=species, picture=picture, curation=curation, **context,
    )  # fmt: skip


@router.post("/review/curate")
def start_curation(
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Run curation over every species (defaults: eps from the k-distance knee) as a job."""
    job = dispatch.submit(db, settings, "curate", user_id=user.id)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/review")
def review_all(
    request: Request,
    view: QueueView = QueueView.pending,
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
) -> Response:
    return _queue_response(request, db, user, None, view)


@router.get("/review/species/{species_id}")
def review_species(
    request: Request,
    species_id: int,
    view: QueueView = QueueView.pending,
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
) -> Response:
    _species(db, species_id)
    return _queue_response(request, db, user, species_id, view)


@router.get("/review/more")
def more_cards(
    request: Request,
    after: str,
    species_id: int | None = None,
    view: QueueView = QueueView.pending,
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
) -> Response:
    """The next page of cards (replaces the "Show more" button)."""
    context = _context(db, user, species_id, view, after=after)
    return render(request, "partials/review_cards.html", **context)


@router.get("/review/counts")
def counts_fragment(
    request: Request,
    species_id: int | None = None,
    view: QueueView = QueueView.pending,
    db: Session = Depends(get_db),
) -> Response:
    """Fresh counts as out-of-band swaps (polled, so other reviewers' work shows up)."""
    return render(request, "partials/review_counts.html", **_counts(db, species_id, view))


def _counts(db: Session, species_id: int | None, view: QueueView) -> dict:
    return {
        "oob": True,
        "view": view,
        "views": VIEW_LABELS,
        "scope_id": species_id,
        "base": _base(species_id),
        "counts": review.counts(db, species_id),
        "all_counts": review.species_counts(db),
        "overall": review.counts(db) if species_id is not None else None,
    }


def _parse_seen(seen: str | None) -> str | None:
    return seen if seen in {s.value for s in ReviewState} else None


@router.post("/review/images/{image_id}")
def decide_one(
    request: Request,
    image_id: int,
    decision: Annotated[Decision, Form()],
    seen: Annotated[str | None, Form()] = None,
    view: Annotated[QueueView, Form()] = QueueView.pending,
    scope_id: Annotated[int | None, Form()] = None,
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
) -> Response:
    """Record a decision; htmx gets the card back (or nothing, when it leaves this view)."""
    try:
        outcome = review.decide(db, image_id, decision, user_id=user.id, seen=_parse_seen(seen))
    except ReviewError as exc:
        raise _refused(db, user, exc) from None
    headers = {}
    if decision is Decision.undo:
        # The photo comes back into a queue the browser has already moved past: reload it.
        headers["HX-Trigger"] = "review-refresh"
    card = None
    if outcome.state == review.VIEW_STATES[view] and decision is not Decision.undo:
        page = review.queue_page(db, species_id=outcome.species_id, view=view)
        card = next((item for item in page.items if item.id == image_id), None)
    return render(
        request, "partials/review_decided.html", headers=headers,
        outcomes=[outcome], decision=decision, done=DONE[decision], card=card,
        can_review=True, **_counts(db, scope_id, view),
    )  # fmt: skip


@router.post("/review/bulk")
def decide_bulk(
    request: Request,
    decision: Annotated[Decision, Form()],
    image_ids: Annotated[list[int], Form()],
    view: Annotated[QueueView, Form()] = QueueView.pending,
    scope_id: Annotated[int | None, Form()] = None,
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
) -> Response:
    try:
        outcomes = review.decide_many(db, image_ids, decision, user_id=user.id)
    except ReviewError as exc:
        raise _refused(db, user, exc) from None
    return render(
        request, "partials/review_decided.html", headers={"HX-Trigger": "review-refresh"},
        outcomes=outcomes, decision=decision, done=DONE[decision], card=None, bulk=True,
        can_review=True, **_counts(db, scope_id, view),
    )  # fmt: skip


@router.get("/review/images/{image_id}/history")
def image_history(request: Request, image_id: int, db: Session = Depends(get_db)) -> Response:
    """Every decision on one photo, oldest first (a fragment for the card's details)."""
    return render(
        request, "partials/review_history.html", image_id=image_id,
        entries=review.history(db, image_id),
    )  # fmt: skip
