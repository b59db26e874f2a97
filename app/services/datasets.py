"""Dataset versions: freeze the curated photos into a fixed, split set that training reads.

A version is made once and never changes: `DatasetVersion` (name, policy, seed, per-species stats)
plus one `DatasetItem` per included photo (its species, class index and split).

Inclusion (`Inclusion`): downloaded photos a person kept, or also the photos nobody has reviewed
that curation did not flag. Excluded photos never go in. A species with fewer than
`min_images` eligible photos is left out as a whole (and listed in the stats as skipped).
Class indices follow the included species' scientific names, sorted (case-insensitively), so the
same species set always gives the same labels.

The split (`assign_splits`) is stratified by species and grouped by observation: all photos of an
observation go to one split (a photo without an observation id is its own group). For each
species, its groups are shuffled with a generator seeded from the version's seed and the species'
name, then dealt largest first to whichever split is furthest below its target share. Every split
therefore ends within two groups' size of its target, and the same seed and photos always give
the same split, on any database.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import insert, or_
from sqlmodel import Session, col, func, select

from app.models import (
    DatasetItem,
    DatasetVersion,
    DownloadState,
    Image,
    ReviewState,
    Species,
    Split,
)

SPLITS = (Split.train, Split.val, Split.test)
INSERT_BATCH = 2000


class Inclusion(StrEnum):
    kept = "kept"
    kept_and_unflagged = "kept_and_unflagged"


INCLUSION_LABELS = {
    Inclusion.kept: "Kept photos only",
    Inclusion.kept_and_unflagged: "Kept photos, plus unreviewed photos that curation did not flag",
}


class DatasetError(ValueError):
    """A dataset request that cannot be honoured; the message says why (HTTP `status_code`)."""

    status_code = 422


class DatasetNotFound(DatasetError):
    status_code = 404


class DatasetPolicy(BaseModel):
    """What goes into a version and how it is split."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    inclusion: Inclusion = Inclusion.kept_and_unflagged
    min_images: int = Field(default=10, ge=1, le=100_000)
    val_fraction: float = Field(default=0.15, ge=0, lt=1)
    test_fraction: float = Field(default=0.15, ge=0, lt=1)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("name")
    @classmethod
    def _clean_name(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("give the version a name")
        return value

    @model_validator(mode="after")
    def _fractions(self) -> DatasetPolicy:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("validation and test together must leave some photos for training")
        return self

    @property
    def fractions(self) -> dict[str, float]:
        train = 1.0 - self.val_fraction - self.test_fraction
        return {Split.train: train, Split.val: self.val_fraction, Split.test: self.test_fraction}


# --- the split -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A photo to split: what the split needs to know about it."""

    image_id: int
    species: str  # scientific name: stable across databases, unlike ids
    observation_id: int | None


def group_key(candidate: Candidate) -> str:
    if candidate.observation_id is None:
        return f"image:{candidate.image_id}"
    return f"obs:{candidate.observation_id}"


def assign_splits(
    candidates: Sequence[Candidate], fractions: dict[str, float], seed: int
) -> dict[int, str]:
    """image id → split; grouped by observation, stratified by species, deterministic in `seed`.

    A group holding photos of several species (rare: one observation, two names) is split with
    the species that has most photos in it, so it still never straddles two splits.
    """
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        groups[group_key(c)].append(c)
    by_species: dict[str, list[str]] = defaultdict(list)
    for key, members in groups.items():
        tally = Counter(m.species for m in members)
        owner = min(tally, key=lambda name: (-tally[name], name))
        by_species[owner].append(key)

    assignment: dict[int, str] = {}
    order = [s for s in SPLITS if fractions.get(s, 0) > 0] or [Split.train]
    for species in sorted(by_species):
        keys = sorted(by_species[species])
        random.Random(f"{seed}:{species}").shuffle(keys)
        # Largest groups first (a stable sort keeps the shuffled order among equals).
        keys.sort(key=lambda k: -len(groups[k]))
        total = sum(len(groups[k]) for k in keys)
        target = {s: fractions.get(s, 0) * total for s in order}
        filled = dict.fromkeys(order, 0)
        for key in keys:
            split = max(order, key=lambda s: (target[s] - filled[s], -order.index(s)))
            filled[split] += len(groups[key])
            for member in groups[key]:
                assignment[member.image_id] = split
    return assignment


# --- freezing a version --------------------------------------------------------------------


def _eligible(inclusion: Inclusion) -> Any:
    kept = col(Image.review_state) == ReviewState.kept
    if inclusion is Inclusion.kept:
        return kept
    unflagged = (col(Image.review_state) == ReviewState.unreviewed) & col(Image.flagged).is_(False)
    return or_(kept, unflagged)


@dataclass(frozen=True)
class Preview:
    """What a policy would include, per species, before anything is written."""

    included: list[tuple[int, str, int]]  # (species id, name, eligible photos)
    skipped: list[tuple[int, str, int]]


def preview(session: Session, inclusion: Inclusion, min_images: int) -> Preview:
    rows = session.exec(
        select(col(Species.id), col(Species.scientific_name), func.count(col(Image.id)))
        .join(Image, col(Image.species_id) == col(Species.id))
        .where(col(Image.download_state) == DownloadState.done, _eligible(inclusion))
        .group_by(col(Species.id), col(Species.scientific_name))
    ).all()
    rows = sorted(rows, key=lambda r: (r[1].lower(), r[1]))
    included = [(r[0], r[1], int(r[2])) for r in rows if r[2] >= min_images]
    skipped = [(r[0], r[1], int(r[2])) for r in rows if r[2] < min_images]
    return Preview(included=included, skipped=skipped)


def freeze(session: Session, policy: DatasetPolicy, *, user_id: int | None) -> DatasetVersion:
    """Write a new version from the photos as they are now; one committed transaction."""
    if session.exec(select(DatasetVersion.id).where(DatasetVersion.name == policy.name)).first():
        raise DatasetError(f"there is already a dataset version named '{policy.name}'")
    plan = preview(session, policy.inclusion, policy.min_images)
    if not plan.included:
        raise DatasetError(
            f"no species has {policy.min_images} or more photos that this policy includes; "
            "review more photos or lower the minimum"
        )
    class_index = {sid: i for i, (sid, _, _) in enumerate(plan.included)}
    names = {sid: name for sid, name, _ in plan.included}
    rows = session.exec(
        select(col(Image.id), col(Image.species_id), col(Image.observation_id))
        .where(
            col(Image.download_state) == DownloadState.done,
            _eligible(policy.inclusion),
            col(Image.species_id).in_(list(class_index)),
        )
        .order_by(col(Image.id))
    ).all()
    candidates = [Candidate(r[0], names[r[1]], r[2]) for r in rows]
    species_of = {r[0]: r[1] for r in rows}
    splits = assign_splits(candidates, policy.fractions, policy.seed)

    per_species: dict[int, Counter[str]] = defaultdict(Counter)
    for image_id, split in splits.items():
        per_species[species_of[image_id]][split] += 1
    groups = {group_key(c) for c in candidates}
    stats = {
        "species": [
            {
                "id": sid,
                "name": name,
                "class_index": class_index[sid],
                **{s.value: per_species[sid][s] for s in SPLITS},
                "total": sum(per_species[sid].values()),
            }
            for sid, name, _ in plan.included
        ],
        "skipped": [{"id": sid, "name": name, "eligible": n} for sid, name, n in plan.skipped],
        "totals": {
            **{s.value: sum(c[s] for c in per_species.values()) for s in SPLITS},
            "total": len(splits),
        },
        "groups": len(groups),
        "classes": len(plan.included),
    }
    version = DatasetVersion(
        name=policy.name,
        policy=policy.model_dump(mode="json", exclude={"name", "seed"}),
        seed=policy.seed,
        stats=stats,
        created_by=user_id,
    )
    try:
        session.add(version)
        session.flush()
        assert version.id is not None
        items = [
            {
                "dataset_version_id": version.id,
                "image_id": image_id,
                "species_id": species_of[image_id],
                "split": splits[image_id],
                "class_index": class_index[species_of[image_id]],
            }
            for image_id in sorted(splits)
        ]
        for start in range(0, len(items), INSERT_BATCH):
            session.execute(insert(DatasetItem), items[start : start + INSERT_BATCH])
        session.commit()
    except BaseException:
        session.rollback()
        raise
    session.refresh(version)
    return version


def get_version(session: Session, version_id: int) -> DatasetVersion:
    version = session.get(DatasetVersion, version_id)
    if version is None:
        raise DatasetNotFound(f"there is no dataset version {version_id}")
    return version


def list_versions(session: Session, limit: int = 200) -> Sequence[DatasetVersion]:
    return session.exec(
        select(DatasetVersion).order_by(col(DatasetVersion.id).desc()).limit(limit)
    ).all()


def labels(version: DatasetVersion) -> list[str]:
    """Class names in class-index order."""
    rows = sorted(version.stats.get("species", []), key=lambda r: r["class_index"])
    return [row["name"] for row in rows]


def items(session: Session, version_id: int) -> Iterable[tuple[DatasetItem, Image, str]]:
    """A version's items with their photos and species names, by split, class, then image id."""
    split_order = {s.value: i for i, s in enumerate(SPLITS)}
    rows = session.exec(
        select(DatasetItem, Image, Species.scientific_name)
        .join(Image, col(Image.id) == col(DatasetItem.image_id))
        .join(Species, col(Species.id) == col(DatasetItem.species_id))
        .where(DatasetItem.dataset_version_id == version_id)
    ).all()
    return sorted(
        rows, key=lambda r: (split_order.get(r[0].split, 9), r[0].class_index, r[0].image_id)
    )
