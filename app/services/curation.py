"""Curation: find the odd photos of each species (DBSCAN) and near-duplicates (perceptual hash).

`run_curation` is the rule both the `curate` job and `sporeprint curate` run:

1. features for every downloaded photo of the chosen species, from the feature cache
   (`image_features`, one row per image and extractor key) or computed and cached;
2. per species: standardise, optionally PCA, DBSCAN with eps from the knee of the k-distance curve
   unless given (`workers/ml/dbscan.py`); noise is flagged, and every photo gets a cluster label
   and a continuous anomaly score (k-distance / eps; > 1 means not a core point);
3. perceptual hashes (stored in `images.phash`) grouped within `duplicate_threshold` bits, within
   and across species; a group spanning species is a label conflict;
4. one `curation_runs` row with the parameters and the stats below, and each photo's
   `curation_run_id`, `cluster_label`, `anomaly_score`, `flagged` and `phash` updated, all in one
   transaction at the end (a cancelled or failed run changes nothing but the feature cache).

Human decisions are never touched: `review_state` and `review_events` are not written here, so a
re-run only changes the machine's opinion.

`CurationRun.stats` (JSON) has this shape:

    {
      "extractor": {"key": "colour-texture@1", "dims": 155, "computed": 12, "cached": 468},
      "images": 480, "flagged": 35, "species_count": 8,
      "unreadable": [{"image_id": 7, "reason": "0007.jpg: not a readable image (...)"}],
      "seconds": {"features": 1.4, "hashes": 0.4, "clustering": 0.3},
      "species": {                                   # keyed by str(species_id)
        "3": {"species_id": 3, "name": "Amanita muscaria", "images": 60,
         "status": "clustered",                      # or "skipped" (then only "reason" follows)
         "eps": 9.73, "eps_source": "knee",          # or "given"
         "min_samples": 5, "dims": 155, "clusters": 2, "flagged": 4,
         "knee_index": 52,                           # rank of eps among n points (null if given)
         "k_distance": [3.1, 3.3, ...],              # sorted k-distances, evenly thinned to <= 200
         "k_distance_ranks": [0, 1, ...],            # each value's rank among the n points
         "projection": [[image_id, x, y, flagged, label, score], ...],  # 2-D PCA, <= 2000 rows
         "projection_sampled": false},               # true when rows were left out (> 2000)
        ...
      },
      "duplicates": {"threshold": 4, "groups": 3, "conflicts": 1,
        "items": [{"kind": "conflict", "image_ids": [5, 311], "species_ids": [1, 6],
                   "max_distance": 0}, ...]}         # groups touching the chosen species
    }

Every photo of a species with too few photos for `min_samples` has its cluster fields cleared
(`flagged` false) and the species is listed as skipped with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.config import Settings
from app.models import CurationRun, DownloadState, Image, ImageFeature, Species, utcnow

if TYPE_CHECKING:
    from workers.ml.features import FeatureExtractor

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
MAX_CURVE_POINTS = 200
MAX_PROJECTION_POINTS = 2000
FEATURE_BATCH = 128
_IN_CHUNK = 500  # ids per IN (...) query


class CurateParams(BaseModel):
    """Find anomalous photos (DBSCAN per species) and near-duplicates (perceptual hash)."""

    model_config = ConfigDict(extra="forbid")

    species_ids: list[int] | None = Field(
        default=None, min_length=1, max_length=100_000, description="Only these; null = all."
    )
    species: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        description="Only these scientific names (with or without species_ids).",
    )
    extractor: Literal["auto", "fallback", "keras"] = Field(
        default="auto",
        description="auto: the ImageNet backbone when TensorFlow and its weights are here, "
        "else colour/texture features; fallback: always colour/texture; keras: insist.",
    )
    min_samples: int = Field(
        default=5, ge=2, le=200, description="DBSCAN's min_samples; also k for the k-distance."
    )
    eps: float | None = Field(
        default=None, gt=0, le=1e6, description="DBSCAN's eps; null = from the k-distance knee."
    )
    pca_components: int | None = Field(
        default=None, ge=1, le=2048, description="Reduce standardised features to this many."
    )
    duplicate_threshold: int = Field(
        default=4, ge=0, le=32, description="Most differing perceptual-hash bits of a duplicate."
    )

    @model_validator(mode="after")
    def _tidy(self) -> CurateParams:
        if self.species is not None:
            self.species = [" ".join(name.split()) for name in self.species]
            if any(not name for name in self.species):
                raise ValueError("species names must not be empty")
        return self


class CurationError(ValueError):
    """The request cannot be honoured (unknown species, bad parameters, no extractor)."""


@dataclass
class CurationReport:
    run_id: int
    extractor: str
    images: int
    flagged: int
    species: int
    skipped_species: list[str] = field(default_factory=list)
    duplicate_groups: int = 0
    conflicts: int = 0
    features_computed: int = 0
    features_cached: int = 0
    unreadable: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_params(params: CurateParams | dict[str, Any] | None) -> CurateParams:
    if isinstance(params, CurateParams):
        return params
    try:
        return CurateParams.model_validate(params or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise CurationError(f"invalid curation parameters: {problems}") from None


def _chunks(values: Sequence[Any], size: int = _IN_CHUNK) -> Any:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _species(session: Session, params: CurateParams) -> list[Species]:
    if params.species_ids is None and params.species is None:
        return list(session.exec(select(Species).order_by(col(Species.scientific_name))).all())
    chosen: dict[int, Species] = {}
    if params.species_ids:
        ids = sorted(set(params.species_ids))
        found = session.exec(select(Species).where(col(Species.id).in_(ids))).all()
        missing = sorted(set(ids) - {s.id for s in found})
        if missing:
            raise CurationError(f"unknown species id(s): {', '.join(map(str, missing))}")
        chosen.update({s.id: s for s in found if s.id is not None})
    if params.species:
        names = sorted(set(params.species))
        found = session.exec(select(Species).where(col(Species.scientific_name).in_(names))).all()
        missing_names = sorted(set(names) - {s.scientific_name for s in found})
        if missing_names:
            raise CurationError(f"unknown species: {', '.join(missing_names)}")
        chosen.update({s.id: s for s in found if s.id is not None})
    return sorted(chosen.values(), key=lambda s: s.scientific_name)


def _images(session: Session, species_ids: list[int]) -> list[Image]:
    rows: list[Image] = []
    for chunk in _chunks(species_ids):
        rows.extend(
            session.exec(
                select(Image)
                .where(
                    col(Image.species_id).in_(chunk),
                    Image.download_state == DownloadState.done,
                    col(Image.path).is_not(None),
                )
                .order_by(col(Image.id))
            ).all()
        )
    return rows


def _cached(session: Session, ids: list[int], key: str, dims: int) -> dict[int, np.ndarray]:
    found: dict[int, np.ndarray] = {}
    for chunk in _chunks(ids):
        rows = session.exec(
            select(ImageFeature.image_id, ImageFeature.vector).where(
                col(ImageFeature.image_id).in_(chunk),
                ImageFeature.extractor == key,
                ImageFeature.dims == dims,
            )
        ).all()
        for image_id, vector in rows:
            found[image_id] = np.frombuffer(vector, dtype="<f4").copy()
    return found


def _store(session: Session, key: str, vectors: dict[int, np.ndarray]) -> None:
    """Cache new vectors; a concurrent run that cached the same ones first is fine."""
    rows = [
        ImageFeature(
            image_id=image_id, extractor=key, dims=len(v), vector=v.astype("<f4").tobytes()
        )
        for image_id, v in vectors.items()
    ]
    try:
        session.add_all(rows)
        session.commit()
    except IntegrityError:
        session.rollback()


def _extract(
    extractor: FeatureExtractor, paths: list[Path]
) -> tuple[np.ndarray | None, list[int], dict[int, str]]:
    """Features of a batch; on a bad file, one by one. (vectors, good positions, bad reasons)"""
    try:
        return extractor.extract(paths), list(range(len(paths))), {}
    except ValueError:
        pass
    good: list[int] = []
    vectors: list[np.ndarray] = []
    bad: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            vectors.append(extractor.extract([path])[0])
            good.append(i)
        except ValueError as exc:
            bad[i] = str(exc)
    return (np.stack(vectors) if vectors else None), good, bad


def features_for(
    session: Session,
    images: list[Image],
    data_dir: Path,
    extractor: FeatureExtractor,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, str], int]:
    """Vectors by image id (cached or computed and cached), unreadable reasons, computed count."""
    ids = [i.id for i in images if i.id is not None]
    vectors = _cached(session, ids, extractor.key, extractor.dims)
    todo = [i for i in images if i.id not in vectors]
    unreadable: dict[int, str] = {}
    computed = 0
    for start in range(0, len(todo), FEATURE_BATCH):
        batch = todo[start : start + FEATURE_BATCH]
        out, good, bad = _extract(extractor, [data_dir / str(i.path) for i in batch])
        fresh = {batch[p].id: out[k] for k, p in enumerate(good)} if out is not None else {}
        for position, reason in bad.items():
            unreadable[batch[position].id] = reason  # type: ignore[index]
        _store(session, extractor.key, fresh)  # type: ignore[arg-type]
        vectors.update(fresh)  # type: ignore[arg-type]
        computed += len(fresh)
        if progress:
            progress(start + len(batch), len(todo))
    return vectors, unreadable, computed


def _projection(ids: list[int], result: Any) -> dict[str, Any]:
    n = len(ids)
    keep = np.arange(n)
    if n > MAX_PROJECTION_POINTS:  # every flagged point, then an even sample of the rest
        flagged = np.flatnonzero(result.flagged)[:MAX_PROJECTION_POINTS]
        rest = np.flatnonzero(~result.flagged)
        room = MAX_PROJECTION_POINTS - len(flagged)
        sample = rest[np.linspace(0, len(rest) - 1, room).round().astype(int)] if room else []
        keep = np.sort(np.concatenate([flagged, np.asarray(sample, dtype=int)]))
    rows = [
        [
            ids[i], round(float(result.projection[i, 0]), 4),
            round(float(result.projection[i, 1]), 4), bool(result.flagged[i]),
            int(result.labels[i]), round(float(result.scores[i]), 4),
        ]
        for i in keep
    ]  # fmt: skip
    return {"projection": rows, "projection_sampled": bool(len(keep) < n)}


def _hashes(
    session: Session, images: list[Image], data_dir: Path, unreadable: dict[int, str]
) -> dict[int, str]:
    from workers.ml.duplicates import phash

    found: dict[int, str] = {}
    for image in images:
        assert image.id is not None
        if image.phash:
            found[image.id] = image.phash
        elif image.id not in unreadable:
            try:
                found[image.id] = phash(data_dir / str(image.path))
            except ValueError as exc:
                unreadable[image.id] = str(exc)
    return found


def run_curation(
    session: Session,
    settings: Settings,
    params: CurateParams | dict[str, Any] | None = None,
    *,
    job_id: int | None = None,
    progress: Progress | None = None,
    extractor: FeatureExtractor | None = None,
) -> CurationReport:
    """Curate the chosen species; see the module docstring. Raises CurationError on bad input.

    `progress(fraction, text)` may raise (a cancel) to stop the run; only cached features stay.
    `extractor` overrides the one `params.extractor` picks (tests use it).
    """
    from workers.ml import dbscan, duplicates
    from workers.ml.features import ExtractorUnavailable, pick_extractor

    p = parse_params(params)
    report_progress = progress or (lambda fraction, text: None)
    species = _species(session, p)
    if extractor is None:
        try:
            extractor = pick_extractor(settings, p.extractor)
        except ExtractorUnavailable as exc:
            raise CurationError(str(exc)) from None
    images = _images(session, [s.id for s in species if s.id is not None])
    report_progress(0.0, f"{len(images)} photos of {len(species)} species")

    started = time.perf_counter()
    vectors, unreadable, computed = features_for(
        session, images, settings.data_dir, extractor,
        progress=lambda d, t: report_progress(0.75 * d / max(t, 1), f"features: {d} of {t}"),
    )  # fmt: skip
    feature_s = time.perf_counter() - started

    started = time.perf_counter()
    hashes = _hashes(session, images, settings.data_dir, unreadable)
    hash_s = time.perf_counter() - started
    report_progress(0.8, "perceptual hashes done")

    started = time.perf_counter()
    updates: dict[int, dict[str, Any]] = {}
    per_species: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    by_species: dict[int, list[Image]] = {}
    for image in images:
        by_species.setdefault(image.species_id, []).append(image)
    for number, sp in enumerate(species, start=1):
        members = by_species.get(sp.id or -1, [])
        ids = [i.id for i in members if i.id in vectors]
        entry: dict[str, Any] = {"species_id": sp.id, "name": sp.scientific_name}
        entry["images"] = len(ids)
        for image in members:
            assert image.id is not None
            updates[image.id] = {
                "id": image.id, "cluster_label": None, "anomaly_score": None, "flagged": False,
            }  # fmt: skip
        if len(ids) <= p.min_samples:
            entry.update(status="skipped", reason=f"{len(ids)} photos; DBSCAN needs more than "
                         f"min_samples={p.min_samples}")  # fmt: skip
            skipped.append(sp.scientific_name)
        else:
            limit = min(len(ids), extractor.dims)
            if p.pca_components is not None and p.pca_components > limit:
                raise CurationError(
                    f"pca_components={p.pca_components} is more than {sp.scientific_name} "
                    f"allows ({limit}: the smaller of its photos and the feature dimensions)"
                )
            result = dbscan.cluster(
                np.stack([vectors[i] for i in ids]),  # type: ignore[index]
                min_samples=p.min_samples, eps=p.eps, pca_components=p.pca_components,
            )  # fmt: skip
            for k, image_id in enumerate(ids):
                updates[image_id].update(  # type: ignore[index]
                    cluster_label=int(result.labels[k]),
                    anomaly_score=float(result.scores[k]),
                    flagged=bool(result.flagged[k]),
                )
            curve = dbscan.downsample_curve(result.k_distances, MAX_CURVE_POINTS)
            entry.update(
                status="clustered", eps=round(result.eps, 6), eps_source=result.eps_source,
                min_samples=result.min_samples, dims=result.dims, clusters=result.clusters,
                flagged=result.noise, knee_index=result.knee_index,
                k_distance=[v for _, v in curve], k_distance_ranks=[r for r, _ in curve],
                **_projection(ids, result),  # type: ignore[arg-type]
            )  # fmt: skip
        per_species[str(sp.id)] = entry
        report_progress(0.8 + 0.15 * number / max(len(species), 1), f"clustered {number} species")
    cluster_s = time.perf_counter() - started

    # Duplicates: the chosen photos against every hashed photo, so conflicts with species not
    # curated this time are still seen.
    scope = {i.id for i in images}
    others = session.exec(
        select(Image.id, Image.species_id, Image.phash).where(
            col(Image.phash).is_not(None), Image.download_state == DownloadState.done
        )
    ).all()
    pool = {image_id: (species_id, h) for image_id, species_id, h in others}
    for image in images:
        if image.id in hashes:
            pool[image.id] = (image.species_id, hashes[image.id])  # type: ignore[index]
    pool_ids = sorted(pool)
    groups = duplicates.find_groups(
        pool_ids, [pool[i][0] for i in pool_ids], [pool[i][1] for i in pool_ids],
        p.duplicate_threshold,
    )  # fmt: skip
    groups = [g for g in groups if scope.intersection(g.image_ids)]

    flagged = sum(1 for u in updates.values() if u["flagged"])
    clustered = sum(1 for e in per_species.values() if e["status"] == "clustered")
    stats: dict[str, Any] = {
        "extractor": {
            "key": extractor.key, "dims": extractor.dims, "computed": computed,
            "cached": len(vectors) - computed,
        },
        "images": len(images), "flagged": flagged, "species_count": len(species),
        "unreadable": [{"image_id": i, "reason": r} for i, r in sorted(unreadable.items())][:500],
        "seconds": {"features": round(feature_s, 3), "hashes": round(hash_s, 3),
                    "clustering": round(cluster_s, 3)},
        "species": per_species,
        "duplicates": {
            "threshold": p.duplicate_threshold, "groups": len(groups),
            "conflicts": sum(g.conflict for g in groups),
            "items": [g.as_dict() for g in groups[:1000]],
        },
    }  # fmt: skip
    report_progress(0.97, "saving")

    run = CurationRun(
        job_id=job_id,
        extractor=extractor.key,
        params=p.model_dump(mode="json"),
        stats=stats,
    )
    session.add(run)
    session.flush()
    now = utcnow()
    rows = []
    for image_id, values in updates.items():
        row = dict(values, curation_run_id=run.id, updated_at=now)
        if image_id in hashes:
            row["phash"] = hashes[image_id]
        rows.append(row)
    # Rows without a phash keep theirs; group them by key set for executemany.
    for keys in {tuple(sorted(r)) for r in rows}:
        batch = [r for r in rows if tuple(sorted(r)) == keys]
        session.execute(update(Image), batch)
    session.commit()
    report_progress(1.0, f"flagged {flagged} of {len(images)} photos")
    assert run.id is not None
    return CurationReport(
        run_id=run.id,
        extractor=extractor.key,
        images=len(images),
        flagged=flagged,
        species=clustered,
        skipped_species=skipped,
        duplicate_groups=len(groups),
        conflicts=sum(g.conflict for g in groups),
        features_computed=computed,
        features_cached=len(vectors) - computed,
        unreadable=len(unreadable),
    )
