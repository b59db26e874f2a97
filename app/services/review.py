"""Human review of photos: keep / exclude / undo decisions, the review queue and its counts.

Every decision is a `ReviewEvent` row (who, when, what, the curation run that flagged the photo,
the state it replaced); `Image.review_state` is a cache of what the events add up to, written in
the same transaction as the event. Replaying an image's events (`replay`) always gives its
state: *keep* and *exclude* push the current state and set theirs; *undo* pops back to the state
before the latest decision not yet undone (so pressing undo again walks further back).

Concurrency: a decision first touches the image row (`UPDATE … SET updated_at`), which takes the
row lock on PostgreSQL and the write lock on SQLite, and only then reads the state it changes.
Two reviewers deciding the same photo therefore queue up: both events are recorded, the later one
wins, and the later reviewer is told that they replaced someone else's decision (`Outcome.replaced`)
when the state they saw (`seen`) is not the state they changed.

Photos on disk are never touched here: excluding a photo only leaves it out of dataset versions.

The queue lists downloaded photos, flagged first, then by anomaly score (highest first, unscored
last), then by id; pages are keyset-paginated on that order (`Cursor`), never by OFFSET.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, case, or_, update
from sqlmodel import Session, col, func, select

from app.models import DownloadState, Image, ReviewEvent, ReviewState, Species, User, utcnow

PAGE_SIZE = 24
MAX_BULK = 500
# Sorts unscored photos after every scored one, on both databases (no NULLS LAST needed).
NO_SCORE = -1e300


class Decision(StrEnum):
    keep = "keep"
    exclude = "exclude"
    undo = "undo"


SETS = {Decision.keep: ReviewState.kept, Decision.exclude: ReviewState.excluded}


class QueueView(StrEnum):
    """Which photos a queue shows: still to review (the default), or those already decided."""

    pending = "pending"
    kept = "kept"
    excluded = "excluded"


VIEW_STATES = {
    QueueView.pending: ReviewState.unreviewed,
    QueueView.kept: ReviewState.kept,
    QueueView.excluded: ReviewState.excluded,
}


class ReviewError(ValueError):
    """A decision that cannot be made; the message says why (HTTP `status_code`)."""

    status_code = 422


class NothingToUndo(ReviewError):
    status_code = 409


class ImageNotFound(ReviewError):
    status_code = 404


# --- decisions -----------------------------------------------------------------------------


def replay(events: Iterable[Any]) -> tuple[str, list[str]]:
    """The state a sequence of events (oldest first) adds up to, and the undo stack under it."""
    state: str = ReviewState.unreviewed
    stack: list[str] = []
    for event in events:
        decision = Decision(event.decision)
        if decision is Decision.undo:
            state = stack.pop() if stack else ReviewState.unreviewed
        else:
            stack.append(state)
            state = SETS[decision]
    return state, stack


@dataclass(frozen=True)
class Replaced:
    """Someone else's decision that this one overrode (the state the reviewer saw was stale)."""

    username: str | None
    decision: str
    at: datetime


@dataclass(frozen=True)
class Outcome:
    event: ReviewEvent
    image_id: int
    species_id: int
    previous_state: str
    state: str
    replaced: Replaced | None = None

    @property
    def changed(self) -> bool:
        return self.previous_state != self.state


def _lock(session: Session, image_ids: Sequence[int]) -> None:
    """Take the write lock on these image rows before reading their state (see module doc)."""
    session.execute(
        update(Image).where(col(Image.id).in_(image_ids)).values(updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )


def _events(session: Session, image_id: int) -> list[ReviewEvent]:
    return list(
        session.exec(
            select(ReviewEvent)
            .where(ReviewEvent.image_id == image_id)
            .order_by(col(ReviewEvent.id))
        ).all()
    )


def _decide_locked(
    session: Session,
    image_id: int,
    species_id: int,
    current: str,
    image_run: int | None,
    decision: Decision,
    user_id: int | None,
    run_id: int | None,
    seen: str | None,
) -> Outcome:
    history = _events(session, image_id)
    _, stack = replay(history)
    if decision is Decision.undo:
        if not history or not stack:
            raise NothingToUndo(f"photo {image_id} has no decision to undo")
        new_state = stack[-1]
    else:
        new_state = SETS[decision]
    replaced = None
    if seen is not None and seen != current and history:
        last = history[-1]
        username = session.exec(select(User.username).where(User.id == last.user_id)).first()
        replaced = Replaced(username=username, decision=last.decision, at=last.created_at)
    event = ReviewEvent(
        image_id=image_id,
        user_id=user_id,
        decision=decision,
        previous_state=current,
        curation_run_id=run_id if run_id is not None else image_run,
    )
    session.add(event)
    session.execute(
        update(Image)
        .where(col(Image.id) == image_id)
        .values(review_state=new_state, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    return Outcome(
        event=event,
        image_id=image_id,
        species_id=species_id,
        previous_state=current,
        state=new_state,
        replaced=replaced,
    )


def _rows(session: Session, image_ids: Sequence[int]) -> dict[int, tuple[int, str, int | None]]:
    rows = session.exec(
        select(
            col(Image.id), col(Image.species_id), col(Image.review_state),
            col(Image.curation_run_id),
        ).where(col(Image.id).in_(image_ids))
    ).all()  # fmt: skip
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def decide(
    session: Session,
    image_id: int,
    decision: Decision | str,
    *,
    user_id: int | None,
    run_id: int | None = None,
    seen: str | None = None,
) -> Outcome:
    """Record one decision and update the photo's state, in one committed transaction.

    `seen` is the state the reviewer was looking at; when it is stale the decision still wins
    (last decision wins) and `Outcome.replaced` names the decision it overrode.
    """
    decision = Decision(decision)
    try:
        _lock(session, [image_id])
        row = _rows(session, [image_id]).get(image_id)
        if row is None:
            raise ImageNotFound(f"there is no image {image_id}")
        outcome = _decide_locked(session, image_id, *row[:2], row[2], decision, user_id, run_id,
                                 seen)  # fmt: skip
        session.commit()
    except BaseException:
        session.rollback()
        raise
    _expire(session, [image_id])
    return outcome


def decide_many(
    session: Session,
    image_ids: Sequence[int],
    decision: Decision | str,
    *,
    user_id: int | None,
    run_id: int | None = None,
) -> list[Outcome]:
    """The same decision on many photos in one transaction; undo skips photos with none to undo."""
    decision = Decision(decision)
    ids = sorted(set(image_ids))  # a fixed lock order: two bulk requests cannot deadlock
    if not ids:
        raise ReviewError("select at least one photo")
    if len(ids) > MAX_BULK:
        raise ReviewError(f"at most {MAX_BULK} photos at once; {len(ids)} were selected")
    outcomes: list[Outcome] = []
    try:
        _lock(session, ids)
        rows = _rows(session, ids)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise ImageNotFound(f"there is no image {missing[0]}")
        for image_id in ids:
            species_id, current, image_run = rows[image_id]
            try:
                outcomes.append(
                    _decide_locked(session, image_id, species_id, current, image_run,
                                   decision, user_id, run_id, None)
                )  # fmt: skip
            except NothingToUndo:
                if decision is not Decision.undo:
                    raise
        session.commit()
    except BaseException:
        session.rollback()
        raise
    _expire(session, ids)
    return outcomes


def _expire(session: Session, image_ids: Sequence[int]) -> None:
    """Drop cached Image objects the bulk UPDATEs bypassed, so the next read is fresh."""
    wanted = set(image_ids)
    for cached in list(session.identity_map.values()):
        if isinstance(cached, Image) and cached.id in wanted:
            session.expire(cached)


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    decision: str
    previous_state: str
    username: str | None
    curation_run_id: int | None
    created_at: datetime


def history(session: Session, image_id: int) -> list[HistoryEntry]:
    """An image's decisions, oldest first, with who made them."""
    rows = session.exec(
        select(
            col(ReviewEvent.id), col(ReviewEvent.decision), col(ReviewEvent.previous_state),
            col(User.username), col(ReviewEvent.curation_run_id), col(ReviewEvent.created_at),
        )
        .join(User, col(User.id) == col(ReviewEvent.user_id), isouter=True)
        .where(ReviewEvent.image_id == image_id)
        .order_by(col(ReviewEvent.id))
    ).all()  # fmt: skip
    return [HistoryEntry(*row) for row in rows]


def derived_state(session: Session, image_id: int) -> str:
    """What the image's events add up to (tests compare it with `Image.review_state`)."""
    return replay(_events(session, image_id))[0]


# --- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a queue page ends: the last photo's (flagged, score, id)."""

    flagged: bool
    score: float
    id: int

    def encode(self) -> str:
        return f"{int(self.flagged)}_{self.score!r}_{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            flagged, score, image_id = text.split("_")
            if flagged not in ("0", "1"):
                raise ValueError(flagged)
            return cls(flagged == "1", float(score), int(image_id))
        except ValueError:
            raise ReviewError(f"not a queue position: {text[:40]!r}") from None


@dataclass(frozen=True)
class QueueItem:
    id: int
    species_id: int
    species_name: str
    sha256: str | None
    width: int | None
    height: int | None
    flagged: bool
    anomaly_score: float | None
    cluster_label: int | None
    review_state: str
    observation_id: int | None
    license: str | None

    @property
    def cursor(self) -> Cursor:
        score = self.anomaly_score if self.anomaly_score is not None else NO_SCORE
        return Cursor(bool(self.flagged), score, self.id)


@dataclass(frozen=True)
class QueuePage:
    items: list[QueueItem]
    next_cursor: str | None


def _score_key() -> Any:
    return func.coalesce(col(Image.anomaly_score), NO_SCORE)


def _after(cursor: Cursor) -> ColumnElement[bool]:
    """Rows after `cursor` in (flagged desc, score desc, id asc) order."""
    score, flagged = _score_key(), col(Image.flagged)
    later_same_flag = or_(
        score < cursor.score, and_(score == cursor.score, col(Image.id) > cursor.id)
    )
    if cursor.flagged:
        return or_(flagged.is_(False), and_(flagged.is_(True), later_same_flag))
    return and_(flagged.is_(False), later_same_flag)


def _scope(species_id: int | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [col(Image.download_state) == DownloadState.done]
    if species_id is not None:
        where.append(col(Image.species_id) == species_id)
    return where


def queue_page(
    session: Session,
    *,
    species_id: int | None = None,
    view: QueueView = QueueView.pending,
    after: str | None = None,
    page_size: int = PAGE_SIZE,
) -> QueuePage:
    where = [*_scope(species_id), col(Image.review_state) == VIEW_STATES[view]]
    if after:
        where.append(_after(Cursor.decode(after)))
    query = (
        select(
            col(Image.id), col(Image.species_id), col(Species.scientific_name),
            col(Image.sha256), col(Image.width), col(Image.height), col(Image.flagged),
            col(Image.anomaly_score), col(Image.cluster_label), col(Image.review_state),
            col(Image.observation_id), col(Image.license),
        )
        .join(Species, col(Species.id) == col(Image.species_id))
        .where(*where)
        .order_by(col(Image.flagged).desc(), _score_key().desc(), col(Image.id))
        .limit(page_size + 1)
    )  # fmt: skip
    rows = session.exec(query).all()
    items = [QueueItem(*row) for row in rows[:page_size]]
    more = len(rows) > page_size
    return QueuePage(items=items, next_cursor=items[-1].cursor.encode() if more else None)


@dataclass(frozen=True)
class ReviewCounts:
    species_id: int | None
    name: str
    pending: int  # downloaded, not yet decided
    flagged: int  # … of which curation flagged
    kept: int
    excluded: int

    @property
    def total(self) -> int:
        return self.pending + self.kept + self.excluded

    @property
    def reviewed_fraction(self) -> float:
        return (self.kept + self.excluded) / self.total if self.total else 1.0

    def count(self, view: QueueView) -> int:
        return {"pending": self.pending, "kept": self.kept, "excluded": self.excluded}[view]


def _count_columns() -> list[Any]:
    def counted(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    pending = col(Image.review_state) == ReviewState.unreviewed
    return [
        counted(pending),
        counted(and_(pending, col(Image.flagged).is_(True))),
        counted(col(Image.review_state) == ReviewState.kept),
        counted(col(Image.review_state) == ReviewState.excluded),
    ]


def counts(session: Session, species_id: int | None = None) -> ReviewCounts:
    """Review counts over one species' downloaded photos, or over all of them."""
    row = session.exec(select(*_count_columns()).where(*_scope(species_id))).one()
    name = "All species"
    if species_id is not None:
        name = (
            session.exec(select(Species.scientific_name).where(Species.id == species_id)).first()
            or ""
        )
    return ReviewCounts(species_id, name, *(int(v) for v in row))


def species_counts(session: Session) -> list[ReviewCounts]:
    """Per-species review counts, species with something to review first (by name)."""
    rows = session.exec(
        select(col(Species.id), col(Species.scientific_name), *_count_columns())
        .join(Image, col(Image.species_id) == col(Species.id))
        .where(*_scope(None))
        .group_by(col(Species.id), col(Species.scientific_name))
        .order_by(func.lower(col(Species.scientific_name)))
    ).all()
    result = [ReviewCounts(r[0], r[1], *(int(v) for v in r[2:])) for r in rows]
    return sorted(result, key=lambda c: c.pending == 0)
