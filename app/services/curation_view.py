"""What the review page shows of curation: the latest run and its duplicate groups.

Kept apart from `curation.py` so the web app reads run results without loading the feature
and clustering code (numpy, scikit-learn) that the workers run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from app.models import CurationRun, Image, Job, Species

MAX_GROUPS = 24  # per kind; the rest is counted, not listed


@dataclass
class GroupImage:
    id: int
    species: str


@dataclass
class DuplicateGroup:
    kind: str  # "conflict" (across species: a label problem) or "duplicate" (within one)
    images: list[GroupImage]
    max_distance: int | None


@dataclass
class CurationSummary:
    run: CurationRun
    job: Job | None
    conflicts: list[DuplicateGroup] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    conflict_count: int = 0
    duplicate_count: int = 0


def latest(session: Session) -> CurationSummary | None:
    run = session.exec(select(CurationRun).order_by(col(CurationRun.id).desc()).limit(1)).first()
    if run is None:
        return None
    summary = CurationSummary(run=run, job=session.get(Job, run.job_id) if run.job_id else None)
    items = (run.stats.get("duplicates") or {}).get("items") or []
    conflicts = [i for i in items if i.get("kind") == "conflict"]
    duplicates = [i for i in items if i.get("kind") != "conflict"]
    summary.conflict_count, summary.duplicate_count = len(conflicts), len(duplicates)
    shown = conflicts[:MAX_GROUPS] + duplicates[:MAX_GROUPS]
    ids = {i for item in shown for i in item.get("image_ids", [])}
    names = dict(
        session.exec(
            select(Image.id, Species.scientific_name)
            .join(Species, col(Species.id) == Image.species_id)
            .where(col(Image.id).in_(ids))
        ).all()
    ) if ids else {}  # fmt: skip
    for item in shown:
        group = DuplicateGroup(
            kind="conflict" if item.get("kind") == "conflict" else "duplicate",
            images=[GroupImage(i, names[i]) for i in item.get("image_ids", []) if i in names],
            max_distance=item.get("max_distance"),
        )
        (summary.conflicts if group.kind == "conflict" else summary.duplicates).append(group)
    return summary
