"""What the species pages show: per-species counts, gallery pages, one image's neighbours.

The rules for the image states live here, so the list's counts and the gallery's filters can
never disagree: *downloaded* = the file is stored (download state `done`), *failed* = the
download gave up, *flagged* = curation marked it anomalous (whatever a person decided since),
*kept* / *excluded* = a person's review decision. *Usable* photos (downloaded and not excluded)
are what the target count is measured against.

Every query is one statement whatever the number of species or images: the list is one grouped
aggregate; a gallery page is a keyset query on `(species_id, id)` (the `species_id` index on
SQLite, which holds the rowid, and a short sort on PostgreSQL), never an OFFSET scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, case, true
from sqlmodel import Session, col, func, select

from app.models import DownloadState, Image, ReviewState, Species

PAGE_SIZE = 60
LIST_LIMIT = 500


class ImageState(StrEnum):
    all = "all"
    downloaded = "downloaded"
    failed = "failed"
    flagged = "flagged"
    kept = "kept"
    excluded = "excluded"


def state_filter(state: ImageState) -> ColumnElement[bool]:
    return {
        ImageState.all: true(),
        ImageState.downloaded: col(Image.download_state) == DownloadState.done,
        ImageState.failed: col(Image.download_state) == DownloadState.failed,
        ImageState.flagged: col(Image.flagged).is_(True),
        ImageState.kept: col(Image.review_state) == ReviewState.kept,
        ImageState.excluded: col(Image.review_state) == ReviewState.excluded,
    }[state]


def _counted(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _count_columns() -> list[Any]:
    usable = (col(Image.download_state) == DownloadState.done) & (
        col(Image.review_state) != ReviewState.excluded
    )
    return [
        func.count(col(Image.id)).label("total"),
        *(_counted(state_filter(s)).label(s.value) for s in ImageState if s is not ImageState.all),
        _counted(usable).label("usable"),
    ]


@dataclass(frozen=True)
class SpeciesCounts:
    id: int
    scientific_name: str
    common_name: str | None
    total: int
    downloaded: int
    failed: int
    flagged: int
    kept: int
    excluded: int
    usable: int

    def count(self, state: ImageState) -> int:
        return self.total if state is ImageState.all else getattr(self, state.value)

    def target_fraction(self, target: int) -> float:
        return min(self.usable / target, 1.0) if target > 0 else 1.0


class SpeciesSort(StrEnum):
    name = "name"
    total = "total"
    downloaded = "downloaded"
    flagged = "flagged"


def species_counts(
    session: Session,
    *,
    search: str = "",
    sort: SpeciesSort = SpeciesSort.name,
    descending: bool = False,
    species_id: int | None = None,
    limit: int = LIST_LIMIT,
) -> list[SpeciesCounts]:
    """Every species (or those whose names contain `search`) with its image counts."""
    columns = _count_columns()
    query = (
        select(col(Species.id), col(Species.scientific_name), col(Species.common_name), *columns)
        .join(Image, col(Image.species_id) == col(Species.id), isouter=True)
        .group_by(col(Species.id), col(Species.scientific_name), col(Species.common_name))
    )
    if species_id is not None:
        query = query.where(col(Species.id) == species_id)
    search = " ".join(search.split())
    if search:
        query = query.where(
            col(Species.scientific_name).icontains(search, autoescape=True)
            | col(Species.common_name).icontains(search, autoescape=True)
        )
    name = func.lower(col(Species.scientific_name))
    if sort is SpeciesSort.name:
        order = [name.desc() if descending else name.asc()]
    else:
        key = {c.key: c for c in columns}[sort.value]
        order = [key.desc() if descending else key.asc(), name.asc()]
    rows = session.exec(query.order_by(*order, col(Species.id)).limit(limit)).all()
    return [SpeciesCounts(*row) for row in rows]


def species_total(session: Session) -> int:
    return session.exec(select(func.count()).select_from(Species)).one()


def pending_downloads(session: Session) -> int:
    """Photos chosen (e.g. from iNaturalist) whose files are not here yet."""
    query = (
        select(func.count())
        .select_from(Image)
        .where(Image.download_state == DownloadState.pending, col(Image.source_url).is_not(None))
    )
    return session.exec(query).one()


@dataclass(frozen=True)
class Tile:
    id: int
    sha256: str | None
    width: int | None
    height: int | None
    download_state: str
    review_state: str
    flagged: bool

    @property
    def has_file(self) -> bool:
        return self.download_state == DownloadState.done and bool(self.sha256)


@dataclass(frozen=True)
class GalleryPage:
    tiles: list[Tile]
    total: int  # images in this species and state
    first_index: int  # 1-based position of the first tile; 0 when empty
    prev_before: int | None  # `before=` for the previous page, None on the first
    next_after: int | None  # `after=` for the next page, None on the last


def gallery_page(
    session: Session,
    species_id: int,
    state: ImageState = ImageState.all,
    *,
    after: int | None = None,
    before: int | None = None,
    page_size: int = PAGE_SIZE,
) -> GalleryPage:
    """One page of a species' images in id order: after `after`, or the page before `before`.

    Three index-backed statements: the page itself, the count, and the count before it.
    """
    where = [col(Image.species_id) == species_id, state_filter(state)]
    fields = (
        col(Image.id), col(Image.sha256), col(Image.width), col(Image.height),
        col(Image.download_state), col(Image.review_state), col(Image.flagged),
    )  # fmt: skip
    query = select(*fields).where(*where).limit(page_size)
    if before is not None:
        rows = session.exec(query.where(col(Image.id) < before).order_by(col(Image.id).desc()))
        rows = list(reversed(rows.all()))
    else:
        if after is not None:
            query = query.where(col(Image.id) > after)
        rows = list(session.exec(query.order_by(col(Image.id))).all())
    if not rows and (after is not None or before is not None):
        return gallery_page(session, species_id, state, page_size=page_size)  # off the end
    tiles = [Tile(*row) for row in rows]
    total = session.exec(select(func.count(col(Image.id))).where(*where)).one()
    earlier = 0
    if tiles:
        earlier = session.exec(
            select(func.count(col(Image.id))).where(*where, col(Image.id) < tiles[0].id)
        ).one()
    return GalleryPage(
        tiles=tiles,
        total=total,
        first_index=earlier + 1 if tiles else 0,
        prev_before=tiles[0].id if earlier > 0 else None,
        next_after=tiles[-1].id if tiles and earlier + len(tiles) < total else None,
    )


def neighbours(session: Session, image: Image) -> tuple[int | None, int | None]:
    """The previous and next image ids of the same species (gallery order)."""
    same = col(Image.species_id) == image.species_id
    prev = session.exec(
        select(col(Image.id)).where(same, col(Image.id) < image.id).order_by(col(Image.id).desc())
    ).first()
    nxt = session.exec(
        select(col(Image.id)).where(same, col(Image.id) > image.id).order_by(col(Image.id))
    ).first()
    return prev, nxt
