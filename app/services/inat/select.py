"""Choose species and photos from the staged iNaturalist dump.

Rules:
- a species is an active taxon of rank `species`; with `include_infraspecific`, observations of
  its active subspecies, varieties and forms count as the species (found through `ancestry`);
- a photo is eligible when its observation has an accepted quality grade (default `research`)
  and its licence is on the allow-list; within one observation only the first
  `per_observation` eligible photos (by position) are eligible at all;
- species: the names asked for (an unknown name is an error that names it), or the `top`
  species by eligible photo count (ties by name);
- photos: up to `per_species` per species, the first photo of every observation before the
  second of any, observations in UUID order (a random but repeatable sample).

The result is `species` rows (linked to an existing species of the same name when there is one)
and pending `images` rows with source `inat`, source_ref the photo id, the photo's URL, licence
and attribution. `images.observation_id` is the observation's stable number from
`inat_observation_keys`. Running the selection again adds only what is missing: species reach
`per_species` photos in all, and a photo already stored is never added twice. Each species is
committed on its own, so an interrupted run is finished by running it again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from app.models import (
    DownloadState,
    Image,
    ImageSource,
    InatObservation,
    InatObservationKey,
    InatObserver,
    InatPhoto,
    InatTaxon,
    Species,
)
from app.services.inat.params import InatSelectParams

INFRASPECIFIC_RANKS = ("subspecies", "variety", "form", "infrahybrid")
MAX_INT32 = 2**31 - 1
LAST = 2**30  # sorts photos without a position after those with one, on every database
IN_CHUNK = 500  # values per SQL IN list


class SelectionError(ValueError):
    """The selection cannot be made (nothing staged, unknown species); the message says why."""


@dataclass
class SpeciesResult:
    name: str
    taxon_id: int
    species_id: int | None = None
    eligible: int = 0
    added: int = 0
    total: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "taxon_id": self.taxon_id, "species_id": self.species_id,
            "eligible": self.eligible, "added": self.added, "total": self.total,
        }  # fmt: skip


@dataclass
class SelectionReport:
    species: list[SpeciesResult] = field(default_factory=list)
    species_created: int = 0
    species_linked: int = 0
    images_added: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "species_selected": len(self.species),
            "species_created": self.species_created,
            "species_linked": self.species_linked,
            "images_added": self.images_added,
            "species": [s.as_dict() for s in self.species],
            "warnings": self.warnings,
        }


ProgressFn = Callable[[int, int, str], None]  # (species done, species total, current name)


# --- pure helpers ----------------------------------------------------------------------------


def photo_url(base_url: str, photo_id: int, size: str, extension: str | None) -> str:
    return f"{base_url.rstrip('/')}/photos/{photo_id}/{size}.{extension or 'jpg'}"


def license_label(license: str | None) -> str:
    """`CC-BY-NC` → `CC BY-NC`, `cc0` → `CC0` (how Creative Commons writes them)."""
    code = (license or "").strip().upper()
    return "CC " + code[3:] if code.startswith("CC-") else code


def attribution(
    license: str | None, name: str | None, login: str | None, observer_id: int | None
) -> str:
    """iNaturalist's own form: `(c) Jane Doe, some rights reserved (CC BY-NC)`."""
    who = (name or "").strip() or (login or "").strip()
    if not who:
        who = f"iNaturalist user {observer_id}" if observer_id else "an iNaturalist user"
    code = (license or "").strip().lower()
    if code == "cc0":
        text = f"(c) {who}, no rights reserved (CC0)"
    elif code.startswith("cc-"):
        text = f"(c) {who}, some rights reserved ({license_label(license)})"
    else:
        text = f"(c) {who}, all rights reserved"
    return text[:512]


def _chunks(values: list[Any], size: int = IN_CHUNK) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


# --- the selection ---------------------------------------------------------------------------


@dataclass
class _Candidate:
    taxon_id: int
    name: str
    ancestry: str | None
    taxa: list[int]  # the species' own id and its infraspecific taxa
    eligible: int = 0


def _ranks(params: InatSelectParams) -> list[str]:
    return ["species", *(INFRASPECIFIC_RANKS if params.include_infraspecific else ())]


def _candidates(session: Session, params: InatSelectParams) -> dict[int, _Candidate]:
    """Active species, each with the active infraspecific taxa that roll up into it."""
    rows = session.exec(
        select(InatTaxon.taxon_id, InatTaxon.name, InatTaxon.rank, InatTaxon.ancestry).where(
            col(InatTaxon.active).is_(True), col(InatTaxon.rank).in_(_ranks(params))
        )
    ).all()
    species = {
        taxon_id: _Candidate(taxon_id, name, ancestry, [taxon_id])
        for taxon_id, name, rank, ancestry in rows
        if rank == "species"
    }
    for taxon_id, _name, rank, ancestry in rows:
        if rank == "species" or not ancestry:
            continue
        for ancestor in reversed(ancestry.split("/")):  # nearest first
            parent = species.get(int(ancestor))
            if parent is not None:
                parent.taxa.append(taxon_id)
                break
    return species


def _eligible(params: InatSelectParams) -> Any:
    """Eligible photos with their rank inside their observation (1 = first)."""
    position = func.coalesce(InatPhoto.position, LAST)
    return (
        select(
            InatObservation.taxon_id,
            InatPhoto.photo_id,
            InatPhoto.extension,
            InatPhoto.license,
            InatPhoto.observation_uuid,
            func.coalesce(InatPhoto.observer_id, InatObservation.observer_id).label("observer"),
            func.row_number()
            .over(
                partition_by=InatPhoto.observation_uuid,
                order_by=(position, InatPhoto.photo_id),
            )
            .label("rn"),
        )
        .select_from(InatPhoto)
        .join(
            InatObservation,
            col(InatObservation.observation_uuid) == col(InatPhoto.observation_uuid),
        )
        .where(
            col(InatObservation.quality_grade).in_(params.quality_grades),
            func.lower(InatPhoto.license).in_(params.licenses),
        )
    )


def _count_eligible(
    session: Session, params: InatSelectParams, candidates: dict[int, _Candidate], only: bool
) -> None:
    """Fill each candidate's `eligible` (capped per observation). `only`: just these taxa."""
    owner = {taxon: c for c in candidates.values() for taxon in c.taxa}
    taxa = list(owner)
    batches = _chunks(taxa) if only else [None]
    for batch in batches:
        query = _eligible(params).join(
            InatTaxon, col(InatTaxon.taxon_id) == col(InatObservation.taxon_id)
        )
        if batch is None:
            query = query.where(
                col(InatTaxon.active).is_(True), col(InatTaxon.rank).in_(_ranks(params))
            )
        else:
            query = query.where(col(InatObservation.taxon_id).in_(batch))
        ranked = query.subquery()
        counts = session.execute(
            sa.select(ranked.c.taxon_id, func.count())
            .where(ranked.c.rn <= params.per_observation)
            .group_by(ranked.c.taxon_id)
        ).all()
        for taxon_id, count in counts:
            candidate = owner.get(taxon_id)
            if candidate is not None:
                candidate.eligible += count


def _resolve_names(
    session: Session, params: InatSelectParams, candidates: dict[int, _Candidate]
) -> list[_Candidate]:
    by_name: dict[str, list[_Candidate]] = {}
    by_folded: dict[str, list[_Candidate]] = {}
    for candidate in candidates.values():
        by_name.setdefault(candidate.name, []).append(candidate)
        by_folded.setdefault(candidate.name.casefold(), []).append(candidate)
    chosen: list[tuple[str, list[_Candidate]]] = []
    problems: list[str] = []
    for name in params.species:
        found = by_name.get(name) or by_folded.get(name.casefold())
        if found:
            chosen.append((name, found))
            continue
        other = session.exec(
            select(InatTaxon.rank, InatTaxon.active).where(
                func.lower(InatTaxon.name) == name.lower()
            )
        ).all()
        if not other:
            problems.append(f"{name!r} (no taxon of that name was ingested)")
        elif any(rank == "species" for rank, _ in other):
            problems.append(f"{name!r} (an inactive name; use its current name)")
        else:
            ranks = sorted({rank or "unranked" for rank, _ in other})
            problems.append(f"{name!r} (a {' / '.join(ranks)}, not a species)")
    if problems:
        raise SelectionError(
            "not an active species in the ingested iNaturalist taxa: " + "; ".join(problems)
        )
    _count_eligible(
        session, params, {c.taxon_id: c for _, found in chosen for c in found}, only=True
    )
    picked: dict[int, _Candidate] = {}
    for _, found in chosen:
        # Two active species of one name (rare homonyms): the one with more photos.
        best = max(found, key=lambda c: (c.eligible, -c.taxon_id))
        picked.setdefault(best.taxon_id, best)
    return list(picked.values())


def _species_row(
    session: Session, candidate: _Candidate, report: SelectionReport
) -> Species | None:
    species = session.exec(
        select(Species).where(Species.inat_taxon_id == candidate.taxon_id)
    ).first()
    if species is not None:
        return species
    species = session.exec(select(Species).where(Species.scientific_name == candidate.name)).first()
    if species is not None:
        if species.inat_taxon_id is not None:
            report.warnings.append(
                f"{candidate.name}: species {species.id} already links iNaturalist taxon "
                f"{species.inat_taxon_id}, not {candidate.taxon_id}; skipped"
            )
            return None
        species.inat_taxon_id = candidate.taxon_id
        species.rank = species.rank or "species"
        species.ancestry = species.ancestry or candidate.ancestry
        report.species_linked += 1
    else:
        species = Species(
            scientific_name=candidate.name,
            inat_taxon_id=candidate.taxon_id,
            rank="species",
            ancestry=candidate.ancestry,
        )
        report.species_created += 1
    session.add(species)
    session.flush()
    return species


def _observation_keys(session: Session, uuids: set[str]) -> dict[str, int]:
    """Stable integers for these observation UUIDs, made for those that have none yet."""
    keys: dict[str, int] = {}
    wanted = sorted(uuids)
    for batch in _chunks(wanted):
        keys.update(
            session.exec(
                select(InatObservationKey.observation_uuid, InatObservationKey.id).where(
                    col(InatObservationKey.observation_uuid).in_(batch)
                )
            ).all()
        )
    missing = [u for u in wanted if u not in keys]
    if missing:
        session.execute(sa.insert(InatObservationKey), [{"observation_uuid": u} for u in missing])
        for batch in _chunks(missing):
            keys.update(
                session.exec(
                    select(InatObservationKey.observation_uuid, InatObservationKey.id).where(
                        col(InatObservationKey.observation_uuid).in_(batch)
                    )
                ).all()
            )
    return keys


def _fill_species(
    session: Session,
    params: InatSelectParams,
    candidate: _Candidate,
    species: Species,
    base_url: str,
) -> SpeciesResult:
    result = SpeciesResult(candidate.name, candidate.taxon_id, species.id, candidate.eligible)
    present = set(
        session.exec(
            select(Image.source_ref).where(
                Image.species_id == species.id, Image.source == ImageSource.inat
            )
        ).all()
    )
    per_observation: Counter[str] = Counter(
        dict(
            session.exec(
                select(InatObservationKey.observation_uuid, func.count())
                .join(Image, col(Image.observation_id) == col(InatObservationKey.id))
                .where(Image.species_id == species.id, Image.source == ImageSource.inat)
                .group_by(InatObservationKey.observation_uuid)
            ).all()
        )
    )
    need = params.per_species - len(present)
    picks: list[Any] = []
    ranked = _eligible(params).where(col(InatObservation.taxon_id).in_(candidate.taxa)).subquery()
    query = (
        sa.select(ranked, InatObserver.login, InatObserver.name)
        .outerjoin(InatObserver, col(InatObserver.observer_id) == ranked.c.observer)
        .where(ranked.c.rn <= params.per_observation)
        .order_by(ranked.c.rn, ranked.c.observation_uuid, ranked.c.photo_id)
    )
    page, offset = need + len(present) + 100, 0
    while need > len(picks):
        rows = session.execute(query.limit(page).offset(offset)).all()
        offset += page
        refs = [str(row.photo_id) for row in rows]
        stored: set[str] = set()
        for batch in _chunks(refs):
            stored.update(
                session.exec(
                    select(Image.source_ref).where(
                        Image.source == ImageSource.inat, col(Image.source_ref).in_(batch)
                    )
                ).all()
            )
        for row, ref in zip(rows, refs, strict=True):
            if ref in stored or per_observation[row.observation_uuid] >= params.per_observation:
                continue  # already here (or under another species), or observation is full
            per_observation[row.observation_uuid] += 1
            stored.add(ref)
            picks.append(row)
            if len(picks) == need:
                break
        if len(rows) < page:
            break
    keys = _observation_keys(session, {row.observation_uuid for row in picks})
    rows = [
        {
            "species_id": species.id, "source": ImageSource.inat.value,
            "source_ref": str(row.photo_id),
            "source_url": photo_url(base_url, row.photo_id, params.photo_size, row.extension),
            "observation_id": keys[row.observation_uuid],
            "observer_id": row.observer if row.observer and row.observer <= MAX_INT32 else None,
            "license": row.license,
            "attribution": attribution(row.license, row.name, row.login, row.observer),
            "download_state": DownloadState.pending.value,
        }
        for row in picks
    ]  # fmt: skip
    if rows:  # one multi-row INSERT; the other columns take the model's defaults
        session.execute(sa.insert(Image), rows)
    result.added = len(picks)
    result.total = len(present) + len(picks)
    return result


def select_photos(
    session: Session,
    params: InatSelectParams,
    *,
    base_url: str,
    progress: ProgressFn | None = None,
) -> SelectionReport:
    """Add species and pending iNaturalist images per `params`; commits once per species."""
    if session.exec(select(InatTaxon.taxon_id).limit(1)).first() is None:
        raise SelectionError(
            "no iNaturalist data has been ingested yet; run an inat-ingest job "
            "(or `sporeprint inat ingest DIR`) first"
        )
    candidates = _candidates(session, params)
    if params.species:
        chosen = _resolve_names(session, params, candidates)
    else:
        _count_eligible(session, params, candidates, only=False)
        ranked = sorted(
            (c for c in candidates.values() if c.eligible > 0),
            key=lambda c: (-c.eligible, c.name, c.taxon_id),
        )
        chosen = ranked[: params.top]
        if not chosen:
            raise SelectionError(
                "no staged photo passes the filters (quality grade "
                f"{', '.join(params.quality_grades)}; licences {', '.join(params.licenses)})"
            )
    report = SelectionReport()
    for done, candidate in enumerate(chosen, start=1):
        species = _species_row(session, candidate, report)
        if species is not None:
            result = _fill_species(session, params, candidate, species, base_url)
            report.species.append(result)
            report.images_added += result.added
            if candidate.eligible == 0:
                report.warnings.append(f"{candidate.name}: no photo passes the filters")
        # Commit before reporting: on SQLite the reporter writes from another connection.
        session.commit()
        if progress is not None:
            progress(done, len(chosen), candidate.name)
    return report
